"""The memcached:// backend on a real memcached 1.6: TTL liveness, atomic release, restarts, TLS.

The contract suite (tests/contract) checks the behaviour every backend shares;
these tests check what only a TTL lock on memcached has. Timings are printed
(``pytest -s``) and asserted with generous bounds: the test machines are loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import pytest

import conch
from conch.backends.memcached.backend import MemcachedBackend
from conch.backends.memcached.client import lock_keys
from tests.backends import tls_failures
from tests.contract import workers
from tests.servers.base import free_port
from tests.servers.memcached import MemcachedProcess, start_memcached
from tests.tls import KEY_PASSWORD, PKI


@pytest.fixture
def own_memcached() -> Iterator[MemcachedProcess]:
    """A server of this test alone: free to restart and pause."""
    server = start_memcached()
    try:
        yield server
    finally:
        server.cleanup()


def backend_of(coordinator: conch.Coordinator) -> MemcachedBackend:
    backend = coordinator._backend
    assert isinstance(backend, MemcachedBackend)
    return backend


def test_a_killed_holder_process_is_replaced_within_the_ttl(
    memcached_server: MemcachedProcess, lock_name: str
) -> None:
    url = f"{memcached_server.url}?ttl=2"
    took = workers.takeover_after_kill(url, lock_name)
    print(f"\nkilled holder's lock taken over {took:.2f} s after SIGKILL (ttl 2 s)")
    assert took < 2 + 1.0


def test_a_server_restart_tells_the_holder_before_anyone_else_gets_the_lock(
    own_memcached: MemcachedProcess, lock_name: str
) -> None:
    url = f"{own_memcached.url}?ttl=2"
    with conch.connect(url) as holder, conch.connect(url) as other:
        held = holder.lock(lock_name)
        assert held.acquire()
        first_token = held.token
        before_restart_us = time.time_ns() // 1000
        own_memcached.restart()  # memcached keeps nothing: the lock and its counter are gone
        restarted = time.monotonic()
        taker = other.lock(lock_name)
        assert taker.acquire(blocking=10)
        taken_after = time.monotonic() - restarted
        assert held.lost.is_set(), "two holders: the lock was granted before its holder was told"
        assert first_token is not None and taker.token is not None
        assert taker.token > first_token, "the counter is re-seeded from the clock"
        assert taker.token > before_restart_us
        with pytest.raises(conch.LockLost):
            held.release()
        assert holder.lock(lock_name).acquire(blocking=False) is False, \
            "the late release deleted the new holder's lock"
        taker.release()
    print(f"\nafter the restart the lock was granted again {taken_after:.2f} s later (ttl 2 s)")
    assert taken_after < 2 + 2.0


def test_a_server_paused_beyond_the_lease_costs_the_holder_its_lock_before_it_resumes(
    own_memcached: MemcachedProcess, lock_name: str
) -> None:
    ttl = 2
    url = f"{own_memcached.url}?ttl={ttl}&timeout=0.3"
    with conch.connect(url) as holder:
        held = holder.lock(lock_name)
        assert held.acquire()
        first_token = held.token
        own_memcached.pause()
        paused = time.monotonic()
        try:
            assert held.lost.wait(ttl + 2.0), "renewals failed for the whole TTL, unnoticed"
            told_after = time.monotonic() - paused
        finally:
            own_memcached.resume()
        with conch.connect(url) as waiter:
            taker = waiter.lock(lock_name)
            assert taker.acquire(blocking=ttl + 3)
            assert first_token is not None and taker.token is not None
            assert taker.token > first_token
            taker.release()
        with pytest.raises(conch.LockLost):
            held.release()
    print(f"\nholder told of the loss {told_after:.2f} s into a pause (ttl {ttl} s)")
    assert told_after <= ttl - 1 + 0.3, "the holder must know before the server may free it"


def test_a_late_release_never_deletes_the_lock_of_the_next_holder(
    memcached_server: MemcachedProcess, lock_name: str
) -> None:
    url = f"{memcached_server.url}?ttl=2"
    with conch.connect(url) as first, conch.connect(url) as second:
        stale = first.lock(lock_name)
        assert stale.acquire()
        heartbeat = backend_of(first).session.ttl._heartbeat
        assert heartbeat is not None
        heartbeat.stop()  # a holder frozen past its TTL: no renewal, not told of the loss
        taker = second.lock(lock_name)
        assert taker.acquire(blocking=5), "the unrenewed key did not expire"
        assert not stale.lost.is_set()
        with pytest.raises(conch.LockLost):  # late: the key now holds the taker's value
            stale.release()
        assert second.lock(lock_name).acquire(blocking=False) is False, "the release deleted it"
        time.sleep(3 * backend_of(second).session.ttl.interval)
        assert taker.held and not taker.lost.is_set()
        taker.release()


def test_a_forked_child_uses_connections_of_its_own(memcached_url: str, lock_name: str) -> None:
    with conch.connect(memcached_url) as coordinator:
        held = coordinator.lock(lock_name)
        assert held.acquire(blocking=False)  # its connection now waits in the pool
        parents_client = backend_of(coordinator).session.client
        child = os.fork()
        if child == 0:
            exit_code = 1
            try:
                own = coordinator.lock(f"{lock_name}-child")
                assert own.acquire(blocking=5.0)
                own.release()
                exit_code = 2 if backend_of(coordinator).session.client is parents_client else 0
            finally:
                os._exit(exit_code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert held.held and not held.lost.is_set()
        held.release()
        freed = coordinator.lock(f"{lock_name}-child")
        assert freed.acquire(blocking=False), "the child's release left its lock held"
        freed.release()


class ReplyDroppingProxy:
    """A loopback TCP proxy to memcached that can lose the reply to one request."""

    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._drop: bytes | None = None
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_reply_to(self, request_start: bytes) -> None:
        """Forward the next request starting with ``request_start``, then cut the connection
        before its reply comes back."""
        self._drop = request_start

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            muted = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, muted, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, muted, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, muted: threading.Event,
              requests: bool) -> None:
        # The other direction's pump closes both sockets when it ends: a recv or send on
        # a socket closed meanwhile ends this one too.
        with source, sink, contextlib.suppress(OSError):
            while data := source.recv(65536):
                if requests and self._drop is not None and data.startswith(self._drop):
                    self._drop = None
                    muted.set()
                    sink.sendall(data)
                    time.sleep(0.2)  # the server stores; its reply is swallowed below
                    self.dropped += 1
                    # The client's side first: cutting the server's wakes the other pump,
                    # which then closes both.
                    source.shutdown(socket.SHUT_RDWR)
                    sink.shutdown(socket.SHUT_RDWR)
                    return
                if not muted.is_set():
                    sink.sendall(data)

    def __enter__(self) -> ReplyDroppingProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._listener.close()


def test_an_acquire_whose_reply_was_lost_holds_the_lock_instead_of_orphaning_it(
    memcached_server: MemcachedProcess, memcached_url: str, lock_name: str
) -> None:
    with ReplyDroppingProxy(memcached_server.port) as proxy, \
            conch.connect(f"memcached://127.0.0.1:{proxy.port}?ttl=3") as coordinator, \
            conch.connect(memcached_url) as other:
        proxy.drop_reply_to(b"ms ")  # the add of the holder key
        lock = coordinator.lock(lock_name)
        assert lock.acquire(blocking=False), "the retry did not recognise its own hold"
        assert proxy.dropped == 1
        assert other.lock(lock_name).acquire(blocking=False) is False
        lock.release()
        freed = other.lock(lock_name)
        assert freed.acquire(blocking=False), "the release left the lock held"
        freed.release()


def test_keys_are_short_printable_and_distinct_for_any_name() -> None:
    names = [b"a", b"a b\x00\n", "ü/../x".encode(), b"x" * 65536, b"x" * 65535 + b"y"]
    keys = [lock_keys(name) for name in names]
    for holder, counter in keys:
        for key in (holder, counter):
            assert len(key) <= 250 and key.decode("ascii").isprintable() and b" " not in key
    assert len({key.holder for key in keys}) == len(names)


@pytest.mark.parametrize("case, expected", [
    ("refused", "ConnectionRefusedError"),
    ("silent", "no reply within 0.5 s"),
])
def test_an_unreachable_server_gives_one_clear_message_without_hanging(
    case: str, expected: str
) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = free_port() if case == "refused" else silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(conch.BackendUnavailable) as raised:
            conch.connect(f"memcached://127.0.0.1:{port}?connect_timeout=0.5&timeout=0.5")
    assert time.monotonic() - started < 3.0
    assert f"memcached at 127.0.0.1:{port}" in str(raised.value)
    assert expected in str(raised.value)


@pytest.mark.parametrize("url, expected", [
    ("memcached://127.0.0.1:11211?ttl=1", "ttl must be whole seconds from 2"),
    ("memcached://127.0.0.1:11211?ttl=2.5", "ttl must be whole seconds from 2"),
    ("memcached://127.0.0.1:11211?ttl=soon", "ttl must be a positive number"),
    ("memcached://127.0.0.1:11211?timeout=0", "timeout must be a positive number"),
    ("memcached://127.0.0.1:11211?lease=3", "unknown option lease"),
    ("memcached://127.0.0.1:1,127.0.0.1:2", "exactly one server"),
    ("memcached://", "exactly one server"),
    ("memcached://127.0.0.1:11211/locks", "no path"),
    ("memcached://user:hunter2-secret@127.0.0.1:11211", "no credentials"),
    ("memcached://127.0.0.1:99999", "out of range"),
    ("memcached://127.0.0.1:11211?ssl=false&ssl_ca=/ca.pem", "(ssl_ca) need TLS: drop ssl=false"),
    ("memcached://127.0.0.1:11211?ssl=maybe", "ssl must be true or false"),
    ("memcached://127.0.0.1:11211?ssl_verify_mode=some", "ssl_verify_mode must be one of"),
])
def test_malformed_urls_are_refused_with_a_clear_message(url: str, expected: str) -> None:
    with pytest.raises(conch.InvalidURL) as raised:
        conch.connect(url)
    assert expected in str(raised.value) and "hunter2-secret" not in str(raised.value)


def test_tls_locks_and_lists_holders_with_a_client_certificate(
    memcached_tls_server: MemcachedProcess, memcached_tls_url: str, lock_name: str
) -> None:
    # conch ls reads the cache on a connection of its own (lru_crawler metadump): TLS too.
    with conch.connect(memcached_tls_url) as coordinator, coordinator.lock(lock_name) as lock:
        held = {info.name: info for info in coordinator.holders()}
        holder = held[lock_name].holder
        assert holder is not None and holder.token == lock.token


@pytest.mark.parametrize("case, expected", [
    ("wrong CA", tls_failures.WRONG_CA),
    # 127.1 is 127.0.0.1 to the resolver, but a name the certificate does not hold.
    ("host name not in the certificate", re.escape(
        "TLS handshake failed: certificate verify failed: Hostname mismatch, certificate is "
        "not valid for '127.1'.")),
    ("stranger client certificate", tls_failures.CLIENT_CERTIFICATE_REFUSED),
    ("no client certificate", tls_failures.CLIENT_CERTIFICATE_MISSING),
    ("plain text to the TLS port", tls_failures.plain_to_tls("add ssl=true")),
    ("missing CA file", tls_failures.missing_file("ssl_ca")),
    ("wrong key password", re.escape("the key password is wrong")),
])
def test_each_tls_failure_is_one_clear_backend_unavailable(
    memcached_tls_server: MemcachedProcess, pki: PKI, case: str, expected: str
) -> None:
    host = "127.1" if case == "host name not in the certificate" else "127.0.0.1"
    base = f"memcached://{host}:{memcached_tls_server.port}?connect_timeout=1"
    url = {
        "wrong CA": f"{base}&ssl_ca={pki.stranger_ca}&ssl_cert={pki.client_cert}"
                    f"&ssl_key={pki.client_key}",
        "host name not in the certificate": f"{base}&ssl_ca={pki.ca}"
            f"&ssl_cert={pki.client_cert}&ssl_key={pki.encrypted_client_key}"
            f"&ssl_key_password={KEY_PASSWORD}",
        "stranger client certificate": f"{base}&ssl_ca={pki.ca}"
            f"&ssl_cert={pki.stranger_client_cert}&ssl_key={pki.stranger_client_key}",
        "no client certificate": f"{base}&ssl_ca={pki.ca}",
        "plain text to the TLS port": base,
        "missing CA file": f"{base}&ssl_ca=/nonexistent/ca.pem",
        "wrong key password": f"{base}&ssl_ca={pki.ca}&ssl_cert={pki.client_cert}"
            f"&ssl_key={pki.encrypted_client_key}&ssl_key_password=not-{KEY_PASSWORD}",
    }[case]
    tls_failures.one_clear_error(url, f"memcached at {host}:{memcached_tls_server.port}: ",
                                 expected, [KEY_PASSWORD])


def test_tls_to_a_plain_port_says_the_server_does_not_speak_tls(
    memcached_server: MemcachedProcess, pki: PKI
) -> None:
    with pytest.raises(conch.BackendUnavailable,
                       match="the server does not speak TLS on this port"):
        conch.connect(f"{memcached_server.url}?ssl_ca={pki.ca}")
