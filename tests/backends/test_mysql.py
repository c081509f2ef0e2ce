"""mysql:// beyond the contract: sessions, server faults, name mapping, errors, reuse.

Runs against the real MariaDB of ``tests/servers/mysql.py``. Tests that need a
fast session check use ``?session_timeout=4`` (checks every second, replies
within 2 s), which is still slack enough for a loaded machine.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

import conch
from conch.backends.mysql.backend import MySQLBackend
from conch.backends.mysql.lock import FENCING_TABLE
from conch.url import parse_url
from tests.backends import tls_failures
from tests.contract import workers
from tests.servers.mysql import CERTIFICATE_USER, TLS_USER, MySQLServer
from tests.tls import KEY_PASSWORD, PKI

FAST_SESSION = "session_timeout=4"


@pytest.fixture
def server(mysql_server: MySQLServer, mysql_url: str) -> MySQLServer:
    """The server, running (``mysql_url`` restarts it if an earlier test stopped it)."""
    return mysql_server


@pytest.fixture
def fast(server: MySQLServer) -> Iterator[conch.Coordinator]:
    """A coordinator that checks its held sessions every second."""
    with conch.connect(server.url_with(query=FAST_SESSION)) as coordinator:
        yield coordinator


def holder_of(server: MySQLServer, name: str) -> object:
    """The connection id the server records as holding ``name`` (``None`` when free)."""
    server_name = MySQLBackend(parse_url(server.url), "test").server_name(name.encode())
    return server.execute(f"SELECT IS_USED_LOCK('{server_name}')")[0][0]


def connections_made(server: MySQLServer) -> int:
    """The server's count of connection attempts so far."""
    return int(str(server.execute("SHOW GLOBAL STATUS LIKE 'Connections'")[0][1]))


def wait_for(event: threading.Event, timeout: float) -> float:
    """Seconds until ``event`` was set; fails after ``timeout``."""
    started = time.monotonic()
    assert event.wait(timeout), f"not set within {timeout} s"
    return time.monotonic() - started


def test_a_sigkilled_holder_process_frees_its_lock_at_once(
    mysql_url: str, lock_name: str
) -> None:
    holder = workers.spawn(mysql_url, "hold", lock_name)
    try:
        workers.expect(holder, "held ")
        with conch.connect(mysql_url) as coordinator:
            lock = coordinator.lock(lock_name)
            assert lock.acquire(blocking=False) is False
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            killed = time.monotonic()
            assert lock.acquire(blocking=5.0)
            freed_after = time.monotonic() - killed
            lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
    print(f"freed {freed_after * 1000:.1f} ms after SIGKILL")
    # The kernel closes the socket and the server ends the session: no timeout runs.
    assert freed_after < 1.0


def test_a_server_restart_tells_the_holder_it_lost_the_lock(
    server: MySQLServer, fast: conch.Coordinator, lock_name: str
) -> None:
    lock = fast.lock(lock_name)
    assert lock.acquire(blocking=False)
    server.restart()
    print(f"told {wait_for(lock.lost, 15.0):.2f} s after the restart")
    assert not lock.held and lock.token is None
    with pytest.raises(conch.LockLost):
        lock.release()


def test_locks_work_again_after_a_server_restart_without_reconnecting(
    server: MySQLServer, mysql_url: str, lock_name: str
) -> None:
    with conch.connect(mysql_url) as coordinator:
        lock = coordinator.lock(lock_name)
        assert lock.acquire(blocking=False)
        first_token = lock.token
        lock.release()  # its session now waits in the pool, and the restart ends it
        server.restart()
        assert lock.acquire(blocking=5.0)
        assert lock.token is not None and first_token is not None
        assert lock.token > first_token, "tokens survive a server restart"
        lock.release()


def test_a_server_restart_ends_a_wait_with_an_outcome_not_a_hang(
    server: MySQLServer, fast: conch.Coordinator, mysql_url: str, lock_name: str
) -> None:
    held = fast.lock(lock_name)
    assert held.acquire(blocking=False)
    with conch.connect(mysql_url) as other:
        outcome: list[BaseException | bool] = []
        waiter = threading.Thread(
            target=lambda: outcome.append(_acquire_or_error(other.lock(lock_name))))
        waiter.start()
        time.sleep(0.3)
        server.restart()
        waiter.join(20.0)
        assert not waiter.is_alive()
        # Refused while the server was down, or acquired on a fresh session once it was
        # back (the restart freed the holder's lock): either way, never a hang.
        print(f"the waiter got {outcome[0]!r}")
        assert isinstance(outcome[0], conch.BackendUnavailable) or outcome[0] is True
    wait_for(held.lost, 15.0)


def test_a_killed_session_is_reported_lost(
    server: MySQLServer, fast: conch.Coordinator, lock_name: str
) -> None:
    lock = fast.lock(lock_name)
    assert lock.acquire(blocking=False)
    server.execute(f"KILL {holder_of(server, lock_name)}")
    wait_for(lock.lost, 10.0)
    with pytest.raises(conch.LockLost):
        lock.release()
    assert lock.acquire(blocking=False), "the session is replaced"
    lock.release()


def test_release_on_a_session_killed_before_any_check_says_the_hold_was_lost(
    server: MySQLServer, mysql_url: str, lock_name: str
) -> None:
    with conch.connect(mysql_url) as coordinator:  # checks every 2.5 s: none comes first
        lock = coordinator.lock(lock_name)
        assert lock.acquire(blocking=False)
        server.execute(f"KILL {holder_of(server, lock_name)}")
        with pytest.raises(conch.ConchError) as raised:
            lock.release()
    # conch.Lock reports a backend's failed release as BackendUnavailable, naming the loss.
    assert "LockLost: its session ended before the release" in str(raised.value) \
        or isinstance(raised.value, conch.LockLost), raised.value


def test_a_silent_server_makes_the_holder_give_up_and_then_frees_the_lock(
    server: MySQLServer, fast: conch.Coordinator, mysql_url: str, lock_name: str
) -> None:
    lock = fast.lock(lock_name)
    assert lock.acquire(blocking=False)
    server.pause()
    try:
        # One check interval (1 s) plus the reply timeout (2 s), before the
        # server's own 4 s idle limit could free the lock.
        gave_up_after = wait_for(lock.lost, 15.0)
    finally:
        server.resume()
    print(f"gave up {gave_up_after:.2f} s after the server froze")
    with conch.connect(mysql_url) as other:
        taker = other.lock(lock_name)
        assert taker.acquire(blocking=5.0), "the abandoned session was closed"
        taker.release()


def test_tokens_keep_increasing_across_holders_coordinators_and_processes(
    mysql_url: str, lock_name: str
) -> None:
    tokens: list[int | None] = []
    for _ in range(3):
        with conch.connect(mysql_url) as coordinator:
            for _ in range(3):
                with coordinator.lock(lock_name) as lock:
                    tokens.append(lock.token)
    holder = workers.spawn(mysql_url, "hold", lock_name)
    try:
        tokens.append(int(workers.expect(holder, "held ")))
    finally:
        holder.kill()
        holder.communicate()
    with conch.connect(mysql_url) as coordinator, coordinator.lock(lock_name) as lock:
        tokens.append(lock.token)
    assert None not in tokens
    assert tokens == sorted({token or 0 for token in tokens}), tokens


def test_no_two_holders_among_threads_sharing_one_coordinator(
    mysql_url: str, lock_name: str
) -> None:
    inside = 0
    most_inside = 0
    sections = 0
    stop_at = time.monotonic() + 2.0
    tally = threading.Lock()

    def contend(lock: conch.Lock) -> None:
        nonlocal inside, most_inside, sections
        while time.monotonic() < stop_at:
            with lock:
                with tally:
                    inside += 1
                    most_inside = max(most_inside, inside)
                time.sleep(0.0005)
                with tally:
                    inside -= 1
                    sections += 1

    with conch.connect(mysql_url) as coordinator:
        threads = [threading.Thread(target=contend, args=(coordinator.lock(lock_name),))
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sections > 20
    assert most_inside == 1


def test_two_holds_in_one_coordinator_use_two_sessions(
    server: MySQLServer, mysql_url: str, lock_name: str
) -> None:
    with conch.connect(mysql_url) as coordinator:
        first = coordinator.lock(lock_name + "-a")
        second = coordinator.lock(lock_name + "-b")
        assert first.acquire(blocking=False) and second.acquire(blocking=False)
        first_session = holder_of(server, lock_name + "-a")
        second_session = holder_of(server, lock_name + "-b")
        first.release()
        second.release()
    assert first_session is not None and second_session is not None
    assert first_session != second_session


def test_sessions_are_reused_not_opened_per_acquire(
    server: MySQLServer, mysql_url: str, lock_name: str
) -> None:
    with conch.connect(mysql_url) as coordinator:
        lock = coordinator.lock(lock_name)
        before = connections_made(server)
        for _ in range(50):
            assert lock.acquire(blocking=False)
            lock.release()
        opened = connections_made(server) - before
    assert opened <= 1, f"{opened} connections for 50 acquisitions"


def test_a_forked_child_never_touches_its_parents_sessions(
    server: MySQLServer, mysql_url: str, lock_name: str
) -> None:
    with conch.connect(mysql_url) as coordinator:
        held = coordinator.lock(lock_name)
        assert held.acquire(blocking=False)
        pooled = coordinator.lock(lock_name + "-pooled")
        assert pooled.acquire(blocking=False)
        parents_sessions = {holder_of(server, lock_name), holder_of(server, lock_name + "-pooled")}
        pooled.release()  # its session waits in the pool
        child = os.fork()
        if child == 0:
            exit_code = 1
            try:
                held.release()  # the parent's hold: the child must leave it alone
                own = coordinator.lock(lock_name + "-child")
                assert own.acquire(blocking=5.0)
                exit_code = 2 if holder_of(server, lock_name + "-child") in parents_sessions else 0
                own.release()
            finally:
                os._exit(exit_code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert holder_of(server, lock_name) in parents_sessions, "still the parent's"
        assert pooled.acquire(blocking=False), "the pooled session still works"
        pooled.release()
        held.release()


@pytest.mark.parametrize("length", [64, 65, 1000])
def test_long_names_that_differ_only_at_the_end_do_not_exclude_each_other(
    mysql_url: str, lock_name: str, length: int
) -> None:
    stem = (lock_name * (length // len(lock_name) + 1))[: length - 1]
    with conch.connect(mysql_url) as coordinator:
        first, second = coordinator.lock(stem + "1"), coordinator.lock(stem + "2")
        assert first.acquire(blocking=False)
        assert second.acquire(blocking=False)
        assert coordinator.lock(stem + "1").acquire(blocking=False) is False
        first.release()
        second.release()


def test_server_lock_names_are_64_ascii_characters_scoped_by_database() -> None:
    one = MySQLBackend(parse_url("mysql://u@h/one"), "m")
    other = MySQLBackend(parse_url("mysql://u@h/other"), "m")
    name = one.server_name("ünï/../\x00".encode() * 100)
    assert len(name) == 64 and name.isascii() and name == name.lower()
    assert name.startswith("conch:")
    assert other.server_name(b"x") != one.server_name(b"x")


def test_the_fencing_table_is_created_when_missing(server: MySQLServer, lock_name: str) -> None:
    database = f"fresh_{lock_name.replace('-', '_')}"
    server.create_database(database)
    try:
        with conch.connect(server.url_with(database=database)) as coordinator, \
                coordinator.lock(lock_name) as lock:
            assert lock.token == 1
        assert server.execute(f"SELECT token FROM `{database}`.{FENCING_TABLE}") == [(1,)]
    finally:
        server.execute(f"DROP DATABASE `{database}`")


def test_stop_ends_a_wait_in_progress(mysql_url: str, lock_name: str) -> None:
    with conch.connect(mysql_url) as holder_side:
        held = holder_side.lock(lock_name)
        assert held.acquire(blocking=False)
        coordinator = conch.connect(mysql_url + "?" + FAST_SESSION)
        outcome: list[BaseException | bool] = []
        waiter = threading.Thread(
            target=lambda: outcome.append(_acquire_or_error(coordinator.lock(lock_name))))
        waiter.start()
        time.sleep(0.3)
        coordinator.stop()
        waiter.join(10.0)  # one server wait round is 1 s
        assert not waiter.is_alive()
        assert isinstance(outcome[0], conch.NotStarted)
        held.release()


def _acquire_or_error(lock: conch.Lock) -> BaseException | bool:
    try:
        return lock.acquire()
    except conch.ConchError as exc:
        return exc


def test_wrong_password_is_one_clear_error_without_credentials(server: MySQLServer) -> None:
    url = server.url_with(password="not-the-password")
    with pytest.raises(conch.BackendUnavailable) as raised:
        conch.connect(url)
    message = str(raised.value)
    assert "access denied for user 'conch'" in message
    assert "not-the-password" not in message and server.password not in message


def test_unreachable_host_is_one_clear_error_without_credentials(server: MySQLServer) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        with pytest.raises(conch.BackendUnavailable) as raised:
            conch.connect(server.url_with(port=port))
    message = str(raised.value)
    assert f"cannot connect to 127.0.0.1:{port}" in message
    assert server.password not in message and "w%2Frd" not in message


def test_a_server_that_never_answers_fails_within_the_reply_timeout(
    server: MySQLServer,
) -> None:
    with socket.socket() as silent:  # accepts TCP connections, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(conch.BackendUnavailable) as raised:
            conch.connect(server.url_with(port=port, query="session_timeout=2"))
        took = time.monotonic() - started
    assert "no reply from" in str(raised.value) and server.password not in str(raised.value)
    assert took < 5.0


def test_a_unix_socket_replaces_host_and_port(server: MySQLServer, lock_name: str) -> None:
    secret = urllib.parse.quote(server.password, safe="")
    url = f"mysql://conch:{secret}@/conch?unix_socket={urllib.parse.quote(server.socket)}"
    with conch.connect(url) as coordinator, coordinator.lock(lock_name) as lock:
        assert lock.token is not None


def tls_query(pki: PKI, certificate: bool = True) -> str:
    """The ``ssl_*`` options trusting ``pki``'s CA (and showing its client certificate)."""
    query = f"ssl_ca={pki.ca}"
    return f"{query}&ssl_cert={pki.client_cert}&ssl_key={pki.client_key}" if certificate \
        else query


@pytest.mark.parametrize("user, certificate", [(TLS_USER, False), (CERTIFICATE_USER, True)],
                         ids=["REQUIRE SSL", "REQUIRE ISSUER, a client certificate"])
def test_tls_checks_the_server_and_shows_a_client_certificate(
    server: MySQLServer, lock_name: str, user: str, certificate: bool
) -> None:
    url = server.url_with(user=user, query=tls_query(server.tls, certificate))
    with conch.connect(url) as coordinator, coordinator.lock(lock_name) as lock:
        assert lock.token is not None  # the server let the user in: it checked both


def test_tls_reads_an_encrypted_key_a_ca_directory_and_a_cipher_list(
    server: MySQLServer, lock_name: str, tmp_path: pathlib.Path
) -> None:
    pki = server.tls
    (tmp_path / "cas").mkdir()
    subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", pki.ca],
                                  check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / "cas" / f"{subject_hash}.0").write_bytes(pathlib.Path(pki.ca).read_bytes())
    query = (f"ssl_capath={tmp_path / 'cas'}&ssl_cert={pki.client_cert}"
             f"&ssl_key={pki.encrypted_client_key}&ssl_key_password={KEY_PASSWORD}"
             f"&ssl_cipher=ECDHE-ECDSA-AES128-GCM-SHA256")
    with conch.connect(server.url_with(user=CERTIFICATE_USER, query=query)) as coordinator, \
            coordinator.lock(lock_name) as lock:
        assert lock.token is not None


@pytest.mark.parametrize("case, expected", [
    ("wrong CA", tls_failures.WRONG_CA),
    # 127.1 is 127.0.0.1 to the resolver, but a name the certificate does not hold.
    ("host name not in the certificate", re.escape(
        "TLS handshake failed: certificate verify failed: Hostname mismatch, certificate is "
        "not valid for '127.1'.")),
    ("stranger client certificate", tls_failures.CLIENT_CERTIFICATE_REFUSED),
    ("no client certificate for REQUIRE ISSUER", re.escape(
        "access denied for user 'conch_cert' at 127.0.0.1:")),
    ("no TLS for REQUIRE SSL", re.escape(
        "or the user was created REQUIRE SSL, X509 or ISSUER: it needs TLS or a client "
        "certificate")),
    ("missing CA file", tls_failures.missing_file("ssl_ca")),
])
def test_each_tls_failure_is_one_clear_backend_unavailable(
    server: MySQLServer, case: str, expected: str
) -> None:
    pki = server.tls
    url = {
        "wrong CA": server.url_with(user=CERTIFICATE_USER, query=f"ssl_ca={pki.stranger_ca}"),
        "host name not in the certificate": server.url_with(
            user=TLS_USER, query=tls_query(pki, certificate=False)).replace(
                "@127.0.0.1:", "@127.1:"),
        "stranger client certificate": server.url_with(
            user=CERTIFICATE_USER, query=f"ssl_ca={pki.ca}&ssl_cert={pki.stranger_client_cert}"
                                         f"&ssl_key={pki.stranger_client_key}"),
        "no client certificate for REQUIRE ISSUER": server.url_with(
            user=CERTIFICATE_USER, query=tls_query(pki, certificate=False)),
        "no TLS for REQUIRE SSL": server.url_with(user=TLS_USER, query="ssl=false"),
        "missing CA file": server.url_with(query="ssl_ca=/nonexistent/ca.pem"),
    }[case]
    tls_failures.one_clear_error(url, f":{server.port}", expected, [server.password])


def test_tls_to_a_server_without_it_is_one_clear_error(pki: PKI) -> None:
    plain = MySQLServer(speaks_tls=False)
    try:
        plain.initialise()
        tls_failures.one_clear_error(plain.url_with(query=f"ssl_ca={pki.ca}"), "127.0.0.1:",
                                     "does not offer TLS", [plain.password])
    finally:
        plain.cleanup()


@pytest.mark.parametrize("url", [
    "mysql://conch:s3cret@127.0.0.1:1",
    "mysql://conch:s3cret@127.0.0.1:1/",
    "mysql://conch:s3cret@127.0.0.1:1/a/b",
    "mysql://conch:s3cret@/conch",
    "mysql://conch:s3cret@/conch?unix_sock=/run/mysqld.sock",
    "mysql://conch:s3cret@h1,h2/conch",
    "mysql://conch:s3cret@127.0.0.1:99999/conch",
    "mysql://conch:s3cret@127.0.0.1/conch?ttl=3",
    "mysql://conch:s3cret@127.0.0.1/conch?session_timeout=-1",
    "mysql://conch:s3cret@127.0.0.1/conch?connect_timeout=soon",
    "mysql://conch:s3cret@127.0.0.1/conch?ssl=false&ssl_ca=/ca.pem",
    "mysql://conch:s3cret@127.0.0.1/conch?ssl_verify_mode=always",
    "mysql://conch:s3cret@127.0.0.1/conch?ssl_check_hostname=perhaps",
])
def test_malformed_url_is_one_clear_error_without_credentials(url: str) -> None:
    with pytest.raises(conch.InvalidURL) as raised:
        conch.connect(url)
    assert "s3cret" not in str(raised.value)
