"""postgresql:// beyond the contract: sessions, server faults, keys, errors, connection reuse.

Runs against the real PostgreSQL of ``tests/servers/postgresql.py``. Tests that
need a quick loss report use ``?heartbeat=0.5``; bounds stay loose for a loaded
machine.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

import conch
from conch.backends.kit.naming import int64_key as advisory_key
from tests.backends import hold_cases
from tests.contract import workers
from tests.contract.waiting import Waiter
from tests.servers.postgresql import PostgreSQLServer

FAST_HEARTBEAT = "heartbeat=0.5"


@pytest.fixture
def server(postgresql_server: PostgreSQLServer, postgresql_url: str) -> PostgreSQLServer:
    """The server, running (``postgresql_url`` restarts it if an earlier test stopped it)."""
    return postgresql_server


@pytest.fixture
def fast(server: PostgreSQLServer) -> Iterator[conch.Coordinator]:
    """A coordinator that checks its holds twice a second."""
    with conch.connect(server.url_with(query=FAST_HEARTBEAT)) as coordinator:
        yield coordinator


def holder_pid(server: PostgreSQLServer, name: str) -> object:
    """The server process (session) holding ``name``, or ``None`` when free."""
    key = advisory_key(name.encode())
    rows = server.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND classid = %s::oid AND objid = %s::oid",
        (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF,
    )
    return rows[0][0] if rows else None


def sessions_of(server: PostgreSQLServer, coordinator: conch.Coordinator) -> set[object]:
    """The server processes (PIDs) of ``coordinator``'s connections."""
    rows = server.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                          f"conch {coordinator.member_id}"[:63])
    return {row[0] for row in rows}


def wait_for(event: threading.Event, timeout: float) -> float:
    """Seconds until ``event`` was set; fails after ``timeout``."""
    started = time.monotonic()
    assert event.wait(timeout), f"not set within {timeout} s"
    return time.monotonic() - started


def test_a_sigkilled_holder_process_frees_its_lock_at_once(
    server: PostgreSQLServer, lock_name: str
) -> None:
    holder = workers.spawn(server.url, "hold", lock_name)
    try:
        workers.expect(holder, "held ")
        with conch.connect(server.url) as coordinator:
            lock = coordinator.lock(lock_name)
            assert lock.acquire(blocking=False) is False
            waiter = Waiter(lock)
            killed = time.monotonic()
            holder.send_signal(signal.SIGKILL)
            assert waiter.result(timeout=10.0)
            freed_after = waiter.returned_at - killed
            lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
    print(f"waiter woke {freed_after * 1000:.1f} ms after the holder's SIGKILL")
    # The kernel closes the socket, the server ends the session and grants the
    # waiter in the same step: no timeout runs.
    assert freed_after < 1.0


def test_a_server_restart_reports_the_hold_lost_and_tokens_keep_increasing(
    server: PostgreSQLServer, fast: conch.Coordinator, lock_name: str
) -> None:
    holder = fast.lock(lock_name)
    assert holder.acquire(blocking=False)
    old_token = holder.token
    assert old_token is not None
    with conch.connect(server.url) as other:
        waiter = Waiter(other.lock(lock_name), blocking=True)
        time.sleep(0.2)
        assert waiter.waiting
        server.restart()
        # The waiter's session died with the server: it either got the lock on a new
        # session (the server was back) or says the server is unavailable.
        try:
            if waiter.result(timeout=15.0):
                waiter.lock.release()
        except conch.BackendUnavailable:
            pass
        wait_for(holder.lost, timeout=10.0)
        assert not holder.held
        successor = other.lock(lock_name)
        assert successor.acquire(blocking=5.0)
        assert successor.token is not None and successor.token > old_token
        assert holder.acquire(blocking=False) is False, "two holders after the restart"
        new_token = successor.token
        successor.release()
    with pytest.raises(conch.LockLost):
        holder.release()
    assert holder.acquire(blocking=5.0)
    assert holder.token is not None and holder.token > new_token
    holder.release()


def test_a_terminated_session_is_reported_lost_and_release_says_so(
    server: PostgreSQLServer, fast: conch.Coordinator, lock_name: str
) -> None:
    lock = fast.lock(lock_name)
    assert lock.acquire(blocking=False)
    server.execute("SELECT pg_terminate_backend(%s)", holder_pid(server, lock_name))
    wait_for(lock.lost, timeout=5.0)
    with pytest.raises(conch.LockLost):
        lock.release()
    assert lock.acquire(blocking=False), "the pool hands out no dead session"
    lock.release()


def test_a_session_that_stops_answering_costs_the_hold_and_stop_still_returns(
    server: PostgreSQLServer, lock_name: str
) -> None:
    coordinator = conch.connect(server.url_with(query="heartbeat=0.5&connect_timeout=1"))
    lock = coordinator.lock(lock_name)
    assert lock.acquire(blocking=False)
    # Freeze the server process of the holding session (the postmaster's own SIGSTOP
    # would not stop the sessions it forked): a hung server or a partition.
    frozen = holder_pid(server, lock_name)
    assert isinstance(frozen, int)
    os.kill(frozen, signal.SIGSTOP)
    try:
        # Unanswered checks cannot prove the lock is still ours.
        wait_for(lock.lost, timeout=10.0)
        started = time.monotonic()
        coordinator.stop()
        assert time.monotonic() - started < 5.0
    finally:
        os.kill(frozen, signal.SIGCONT)
    # Thawed, the session finds its client gone and ends, freeing the lock.
    with conch.connect(server.url) as other:
        assert other.lock(lock_name).acquire(blocking=5.0)


def test_one_hundred_thousand_names_get_distinct_keys() -> None:
    keys = {advisory_key(f"name-{index}".encode()) for index in range(100_000)}
    assert len(keys) == 100_000
    assert all(-(2**63) <= key < 2**63 for key in keys)


def test_names_that_share_a_tooz_key_do_not_exclude_each_other(
    server: PostgreSQLServer, lock_name: str
) -> None:
    # tooz keys a lock by the first two bytes of the name's MD5.
    seen: dict[bytes, str] = {}
    index = 0
    while True:
        name = f"{lock_name}-{index}"
        tooz_key = hashlib.md5(name.encode()).digest()[:2]
        if tooz_key in seen:
            first, second = seen[tooz_key], name
            break
        seen[tooz_key] = name
        index += 1
    with conch.connect(server.url) as coordinator:
        one, two = coordinator.lock(first), coordinator.lock(second)
        assert one.acquire(blocking=False)
        assert two.acquire(blocking=False), f"{first!r} and {second!r} excluded each other"
        one.release()
        two.release()


def test_a_wrong_password_is_one_clear_error_without_secrets(server: PostgreSQLServer) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    with pytest.raises(conch.BackendUnavailable) as raised:
        conch.connect(server.url_with(password=wrong))
    message = str(raised.value)
    assert "password authentication failed" in message
    assert wrong not in message and server.password not in message
    assert "***" in message


def test_an_unreachable_server_is_one_clear_error_without_secrets(
    server: PostgreSQLServer,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # a port that is bound but does not listen
        port = sock.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(conch.BackendUnavailable) as raised:
            conch.connect(server.url_with(port=port))
    assert time.monotonic() - started < 2.0
    assert "Connection refused" in str(raised.value)
    assert server.password not in str(raised.value)


def test_a_server_that_never_answers_fails_within_connect_timeout(
    server: PostgreSQLServer,
) -> None:
    ticks = 0
    connecting = True

    def tick() -> None:
        nonlocal ticks
        while connecting:
            ticks += 1
            time.sleep(0.01)

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts; nobody ever answers
        ticker = threading.Thread(target=tick)
        ticker.start()
        started = time.monotonic()
        try:
            with pytest.raises(conch.BackendUnavailable) as raised:
                conch.connect(server.url_with(port=silent.getsockname()[1],
                                              query="connect_timeout=2"))
        finally:
            elapsed = time.monotonic() - started
            connecting = False
            ticker.join()
    assert 1.5 < elapsed < 6.0, elapsed
    assert ticks > 50, "connecting stopped the other threads"
    assert "timeout" in str(raised.value)
    assert server.password not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("postgresql://conch:s3cret@127.0.0.1:1,127.0.0.2:1/db", "exactly one host"),
        ("postgresql://conch:s3cret@/db", "exactly one host"),
        ("postgresql://conch:s3cret@127.0.0.1:1/db/more", "one database name"),
        ("postgresql://conch:s3cret@127.0.0.1:1/db?bogus=1", "unknown option bogus"),
        ("postgresql://conch:s3cret@127.0.0.1:1/db?pool_size=0", "pool_size"),
        ("postgresql://conch:s3cret@127.0.0.1:1/db?heartbeat=-1", "heartbeat"),
        ("postgresql://conch:s3cret@127.0.0.1:99999/db", "out of range"),
    ],
)
def test_a_malformed_url_is_one_clear_error_without_secrets(url: str, complaint: str) -> None:
    with pytest.raises(conch.InvalidURL) as raised:
        conch.connect(url)
    assert complaint in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_the_postgres_scheme_is_the_same_backend(server: PostgreSQLServer,
                                                 lock_name: str) -> None:
    alias = server.url.replace("postgresql://", "postgres://", 1)
    with conch.connect(server.url) as first, conch.connect(alias) as second:
        assert first.lock(lock_name).acquire(blocking=False)
        assert second.lock(lock_name).acquire(blocking=False) is False


def test_a_percent_encoded_host_is_a_unix_socket_directory(
    server: PostgreSQLServer, lock_name: str
) -> None:
    socket_url = server.url_with(host=urllib.parse.quote(server.data_dir, safe=""))
    with conch.connect(socket_url) as local, conch.connect(server.url) as remote:
        assert local.lock(lock_name).acquire(blocking=False)
        assert remote.lock(lock_name).acquire(blocking=False) is False
        assert server.execute("SELECT client_addr FROM pg_stat_activity WHERE pid = %s",
                              holder_pid(server, lock_name)) == [(None,)]


def test_acquisitions_reuse_one_connection(server: PostgreSQLServer, lock_name: str) -> None:
    with conch.connect(server.url) as coordinator:
        before = sessions_of(server, coordinator)
        assert len(before) == 1
        for index in range(200):
            lock = coordinator.lock(f"{lock_name}-{index % 7}")
            assert lock.acquire(blocking=index % 3 == 0 or 1.0)
            lock.release()
        assert sessions_of(server, coordinator) == before


def test_a_timed_out_wait_leaves_its_connection_usable(
    server: PostgreSQLServer, lock_name: str
) -> None:
    with conch.connect(server.url) as holder, conch.connect(server.url) as coordinator:
        assert holder.lock(lock_name).acquire()
        sessions = sessions_of(server, coordinator)
        started = time.monotonic()
        assert coordinator.lock(lock_name).acquire(blocking=0.3) is False
        assert 0.25 < time.monotonic() - started < 2.0
        other = coordinator.lock(f"{lock_name}-other")
        assert other.acquire(blocking=False)
        assert holder_pid(server, f"{lock_name}-other") in sessions
        other.release()
        assert sessions_of(server, coordinator) == sessions


def test_a_timed_out_wait_leaves_no_lock_timeout_on_its_session(
    server: PostgreSQLServer, lock_name: str
) -> None:
    with conch.connect(server.url) as holder, \
            conch.connect(f"{server.url}?pool_size=1") as coordinator:
        held = holder.lock(lock_name)
        assert held.acquire()
        lock = coordinator.lock(lock_name)
        assert lock.acquire(blocking=0.2) is False  # its lock_timeout set, then rolled back
        waiter = Waiter(lock, blocking=True)  # on the same session: waits with no timeout
        time.sleep(0.6)
        held.release()
        assert waiter.result(timeout=5.0) is True
        lock.release()
        assert lock.acquire(blocking=5.0)  # a timed wait after a forever one: set again
        lock.release()


def test_a_released_session_holds_no_lock_when_it_serves_the_next_name(
    server: PostgreSQLServer, lock_name: str
) -> None:
    with conch.connect(server.url) as coordinator:
        first = coordinator.lock(f"{lock_name}-a")
        assert first.acquire()
        pid = holder_pid(server, f"{lock_name}-a")
        first.release()
        second = coordinator.lock(f"{lock_name}-b")
        assert second.acquire()
        assert holder_pid(server, f"{lock_name}-b") == pid, "the session was reused"
        assert holder_pid(server, f"{lock_name}-a") is None
        second.release()


def test_two_holds_of_one_name_in_one_coordinator_use_two_sessions(
    server: PostgreSQLServer, lock_name: str
) -> None:
    with conch.connect(server.url) as coordinator:
        first, second = coordinator.lock(lock_name), coordinator.lock(lock_name)
        assert first.acquire()
        waiter = Waiter(second, blocking=True)
        time.sleep(0.2)
        assert waiter.waiting, "advisory locks are re-entrant in one session"
        first.release()
        assert waiter.result(timeout=5.0)
        second.release()


@pytest.mark.parametrize("shared", [False, True])
def test_stop_ends_a_wait_in_progress(server: PostgreSQLServer, lock_name: str,
                                      shared: bool) -> None:
    hold_cases.stop_ends_a_wait(server.url, lambda started: started.lock(lock_name),
                                lambda started: started.lock(lock_name, shared=shared))


def _acquire_in_child(name: str, held_elsewhere: str,
                      results: multiprocessing.Queue[object]) -> None:
    # Runs in a forked child that inherited the parent's started coordinator.
    results.put((_inherited.lock(name).acquire(blocking=False),
                 _inherited.lock(held_elsewhere).acquire(blocking=False)))


_inherited: conch.Coordinator


def test_a_forked_child_leaves_the_parents_sessions_alone(
    server: PostgreSQLServer, lock_name: str
) -> None:
    global _inherited
    with conch.connect(server.url) as coordinator:
        held = coordinator.lock(f"{lock_name}-parent")
        assert held.acquire()
        pid = holder_pid(server, f"{lock_name}-parent")
        _inherited = coordinator
        context = multiprocessing.get_context("fork")
        results: multiprocessing.Queue[object] = context.Queue()
        child = context.Process(target=_acquire_in_child,
                                args=(f"{lock_name}-child", f"{lock_name}-parent", results))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert results.get(timeout=1) == (True, False)
        assert holder_pid(server, f"{lock_name}-parent") == pid, "the parent still holds"
        held.release()
        assert coordinator.lock(lock_name).acquire(blocking=False), "the parent's pool works"


def test_the_fencing_sequence_is_created_in_a_fresh_database(
    server: PostgreSQLServer, lock_name: str
) -> None:
    database = f"fresh_{uuid.uuid4().hex[:12]}"
    server.execute(f"CREATE DATABASE {database} OWNER conch")
    try:
        url = server.url.rsplit("/", 1)[0] + f"/{database}"
        with conch.connect(url) as coordinator:
            lock = coordinator.lock(lock_name)
            assert lock.acquire()
            assert lock.token == 1
            lock.release()
            assert lock.acquire()
            assert lock.token == 2
            lock.release()
    finally:
        server.execute(f"DROP DATABASE {database} WITH (FORCE)")


def test_a_user_who_may_not_create_the_sequence_is_told_how_to_fix_it(
    server: PostgreSQLServer,
) -> None:
    database, role = f"locked_{uuid.uuid4().hex[:12]}", f"limited_{uuid.uuid4().hex[:12]}"
    server.execute(f"CREATE ROLE {role} LOGIN")
    server.execute(f"CREATE DATABASE {database}")  # owned by postgres: no CREATE for the role
    try:
        with pytest.raises(conch.BackendUnavailable) as raised:
            conch.connect(f"postgresql://{role}@127.0.0.1:{server.port}/{database}")
        assert "CREATE SEQUENCE" in str(raised.value)
        assert "conch_fencing_token" in str(raised.value)
    finally:
        server.execute(f"DROP DATABASE {database} WITH (FORCE)")
        server.execute(f"DROP ROLE {role}")


def test_tokens_keep_increasing_across_a_server_crash(
    server: PostgreSQLServer, lock_name: str
) -> None:
    tokens = []
    with conch.connect(server.url) as coordinator:
        lock = coordinator.lock(lock_name)
        for _ in range(5):  # the sequence logs ahead: some of these are past its last WAL record
            assert lock.acquire()
            tokens.append(lock.token)
            lock.release()
    server.kill()  # SIGKILL: the next start replays the WAL
    server.ensure_running()
    with conch.connect(server.url) as coordinator:
        lock = coordinator.lock(lock_name)
        assert lock.acquire(blocking=5.0)
        assert lock.token is not None and lock.token > max(t for t in tokens if t is not None)
        lock.release()


def test_a_wait_timed_out_on_the_sequence_after_the_grant_leaves_nothing_held(
    server: PostgreSQLServer, lock_name: str
) -> None:
    with conch.connect(server.url) as holder, conch.connect(server.url) as coordinator:
        held = holder.lock(lock_name)
        assert held.acquire()
        waiter = Waiter(coordinator.lock(lock_name), blocking=1.0)
        time.sleep(0.2)
        with server.admin("conch") as admin, admin.transaction():
            # ALTER SEQUENCE keeps nextval() waiting until this transaction ends.
            admin.execute("ALTER SEQUENCE conch_fencing_token CACHE 1")
            held.release()  # the waiter is granted the lock, then waits for the sequence
            assert waiter.result(timeout=5.0) is False
        assert holder_pid(server, lock_name) is None, "the timed-out waiter kept the lock"
        assert coordinator.lock(lock_name).acquire(blocking=False)
