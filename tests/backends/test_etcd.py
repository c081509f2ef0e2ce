"""The etcd:// backend on a real etcd 3.4: leases, FIFO queues, watches, faults, errors.

The contract suite (tests/contract) checks the behaviour every backend shares;
these tests check what only a lease-and-queue lock on etcd has. Timings are
printed (``pytest -s``) and asserted with generous bounds: the machines are loaded.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

import conch
from conch.backends.etcd.backend import EtcdBackend
from conch.url import parse_url
from tests.contract import workers
from tests.contract.waiting import Waiter
from tests.servers.etcd import EtcdServer, start_etcd


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """A server of this test alone (no auth): free to pause, restart and count leases on."""
    server = start_etcd()
    try:
        yield server
    finally:
        server.cleanup()


def backend_of(coordinator: conch.Coordinator) -> EtcdBackend:
    backend = coordinator._backend
    assert isinstance(backend, EtcdBackend)
    return backend


def handled(server: EtcdServer, method: str) -> int:
    """How many ``method`` calls (Txn, Range, ...) the server has answered, from /metrics."""
    with urllib.request.urlopen(f"http://{server.endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = rf'^grpc_server_handled_total{{[^}}]*grpc_method="{method}"[^}}]*}} (\S+)$'
    return sum(int(float(value)) for value in re.findall(pattern, text, re.MULTILINE))


def queued_keys(server: EtcdServer, url: str) -> list[str]:
    """Every key the coordinators of ``url`` have in etcd (holders and waiters)."""
    return server.keys(parse_url(url).path + "/")


def name_keys(server: EtcdServer, url: str, name: str) -> list[str]:
    """The keys queued for lock ``name``, in key order."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:40]
    return server.keys(f"{parse_url(url).path}/{digest}/")


def test_a_killed_holder_process_is_replaced_within_the_lease_ttl(
    etcd_server: EtcdServer, lock_name: str
) -> None:
    url = etcd_server.url(ttl=2)
    took = workers.takeover_after_kill(url, lock_name)
    print(f"\nkilled holder's lock taken over {took:.2f} s after SIGKILL (lease ttl 2 s)")
    # etcd checks for expired leases every 500 ms: the lease ends 2-2.5 s after its last renewal.
    assert took < 2 + 1.5


def test_one_lease_per_coordinator_holds_every_lock_and_close_revokes_it(
    own_etcd: EtcdServer, lock_name: str
) -> None:
    url = own_etcd.url(ttl=5)
    with conch.connect(url) as coordinator:
        locks = [coordinator.lock(f"{lock_name}-{index}") for index in range(10)]
        locks += [coordinator.lock(f"{lock_name}-0")]  # a second object for one name: queues
        for lock in locks[:10]:
            assert lock.acquire(blocking=False)
        assert locks[10].acquire(blocking=0.2) is False
        assert len(own_etcd.lease_ids()) == 1
        assert len(queued_keys(own_etcd, url)) == 10
        for lock in locks[:10]:
            lock.release()
        assert queued_keys(own_etcd, url) == []
    assert own_etcd.lease_ids() == set()


def test_many_cycles_and_coordinators_leave_no_stray_leases_or_keys(
    own_etcd: EtcdServer, lock_name: str
) -> None:
    url = own_etcd.url(ttl=5)
    with conch.connect(url) as steady:
        for round_ in range(5):
            with conch.connect(url) as member:
                for _ in range(40):
                    with member.lock(lock_name):
                        pass
                    with steady.lock(f"{lock_name}-{round_}"):
                        pass
                with member.lock(lock_name):  # a timed-out and a non-blocking waiter
                    assert steady.lock(lock_name).acquire(blocking=0.1) is False
                    assert steady.lock(lock_name).acquire(blocking=False) is False
                assert len(own_etcd.lease_ids()) == 2, "one lease per started coordinator"
        assert len(own_etcd.lease_ids()) == 1
    assert own_etcd.lease_ids() == set(), "close() revokes the session's lease"
    assert queued_keys(own_etcd, url) == []


def test_waiters_are_served_in_the_order_they_queued(
    etcd_server: EtcdServer, etcd_url: str, lock_name: str
) -> None:
    with conch.connect(etcd_url) as first, conch.connect(etcd_url) as second:
        holder = first.lock(lock_name)
        holder.acquire()
        served: list[int] = []
        waiters = []
        for index in range(6):
            member = (first, second)[index % 2]
            lock = member.lock(lock_name)

            def take(lock: conch.Lock = lock, index: int = index) -> None:
                with lock:
                    served.append(index)

            waiters.append(threading.Thread(target=take))
            waiters[-1].start()
            deadline = time.monotonic() + 10
            while len(queued_keys(etcd_server, etcd_url)) < index + 2:  # holder + waiters
                assert time.monotonic() < deadline, "the waiter never queued"
                time.sleep(0.01)
        holder.release()
        for waiter in waiters:
            waiter.join(20)
    assert served == list(range(6))


def test_a_release_wakes_only_the_next_waiter_without_polling(
    own_etcd: EtcdServer, lock_name: str
) -> None:
    url = own_etcd.url()
    with conch.connect(url) as holder_side, conch.connect(url) as waiter_side:
        holder = holder_side.lock(lock_name)
        holder.acquire()
        pending = [Waiter(waiter_side.lock(lock_name)) for _ in range(5)]
        deadline = time.monotonic() + 10
        while len(name_keys(own_etcd, url, lock_name)) < 6:  # the holder and 5 waiters
            assert time.monotonic() < deadline, "the waiters never queued"
            time.sleep(0.01)
        time.sleep(0.5)  # each may read the queue once more after its watch started
        before = handled(own_etcd, "Txn")
        time.sleep(2.0)
        assert handled(own_etcd, "Txn") == before, "a waiter asked etcd while nothing changed"
        released = time.monotonic()
        holder.release()
        first = next(waiter for waiter in _returned(pending, 5))
        handoff = first.returned_at - released
        time.sleep(0.5)
        # The release, then one check by the woken waiter (more would mean a herd).
        assert handled(own_etcd, "Txn") - before <= 2
        assert sum(waiter.waiting for waiter in pending) == 4
        first.lock.release()
        pending.remove(first)
        for waiter in _returned(pending, 20):
            waiter.lock.release()
    print(f"\nhand-off {handoff * 1000:.1f} ms")
    assert handoff < 1.0


def test_the_waiter_right_behind_the_holder_takes_the_lock_without_a_request(
    own_etcd: EtcdServer, lock_name: str
) -> None:
    url = own_etcd.url()
    with conch.connect(url) as coordinator:  # two lock objects queue like two processes
        holder, behind = coordinator.lock(lock_name), coordinator.lock(lock_name)
        holder.acquire()
        waiter = Waiter(behind)
        for _ in range(1000):
            if len(name_keys(own_etcd, url, lock_name)) == 2:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the waiter never queued")
        time.sleep(0.5)  # its watch has started (and it may have read the queue once more)
        reads = handled(own_etcd, "Txn") + handled(own_etcd, "Range")
        holder.release()
        assert waiter.result(timeout=10) is True
        # The holder's delete woke it; it held at once, as nothing else was ahead.
        assert handled(own_etcd, "Txn") + handled(own_etcd, "Range") == reads
        waiter.lock.release()


def _returned(waiters: list[Waiter], timeout: float) -> Iterator[Waiter]:
    """The waiters that return, in the order they do."""
    pending = list(waiters)
    deadline = time.monotonic() + timeout
    while pending:
        assert time.monotonic() < deadline, "a waiter never got the lock"
        for waiter in list(pending):
            if not waiter.waiting:
                pending.remove(waiter)
                assert waiter.result(timeout=0) is True
                yield waiter
        time.sleep(0.002)


def test_a_timed_out_waiter_leaves_no_key_behind(etcd_server: EtcdServer, etcd_url: str,
                                                 lock_name: str) -> None:
    with conch.connect(etcd_url) as coordinator:
        holder = coordinator.lock(lock_name)
        holder.acquire()
        started = time.monotonic()
        assert coordinator.lock(lock_name).acquire(blocking=0.5) is False
        waited = time.monotonic() - started
        assert len(queued_keys(etcd_server, etcd_url)) == 1
        holder.release()
    assert 0.45 < waited < 2.0


def test_a_lease_revoked_in_etcd_loses_every_hold_and_the_next_acquire_gets_a_new_lease(
    etcd_server: EtcdServer, lock_name: str
) -> None:
    with conch.connect(etcd_server.url(ttl=3)) as coordinator:
        locks = [coordinator.lock(f"{lock_name}-{index}") for index in range(2)]
        for lock in locks:
            lock.acquire()
        old_lease = backend_of(coordinator).session.lease().id
        etcd_server.call("/v3/lease/revoke", {"ID": str(old_lease)})
        for lock in locks:
            assert lock.lost.wait(3 / 3 + 3.0), "the next keep-alive did not notice"
            with pytest.raises(conch.LockLost):
                lock.release()
        assert locks[0].acquire(blocking=5)
        assert backend_of(coordinator).session.lease().id != old_lease
        locks[0].release()


def test_a_hold_whose_key_is_deleted_in_etcd_is_reported_lost(
    etcd_server: EtcdServer, lock_name: str
) -> None:
    url = etcd_server.url(ttl=3)
    with conch.connect(url) as coordinator:
        lock, other = coordinator.lock(lock_name), coordinator.lock(f"{lock_name}-other")
        lock.acquire()
        other.acquire()
        [key] = name_keys(etcd_server, url, lock_name)
        etcd_server.call("/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()})
        assert lock.lost.wait(3 / 3 + 3.0), "the next renewal did not notice"
        assert other.held and not other.lost.is_set()
        with pytest.raises(conch.LockLost):
            lock.release()
        assert coordinator.lock(lock_name).acquire(blocking=False)


def test_a_server_paused_beyond_the_ttl_tells_the_holder_before_a_waiter_takes_over(
    own_etcd: EtcdServer, lock_name: str
) -> None:
    url = own_etcd.url(ttl=2, timeout=1)
    with conch.connect(url) as holder_side, conch.connect(url) as waiter_side:
        held = holder_side.lock(lock_name)
        held.acquire()
        first_token = held.token
        own_etcd.pause()
        paused = time.monotonic()
        try:
            assert held.lost.wait(6), "the holder was not told while etcd was silent"
            told = time.monotonic() - paused
        finally:
            own_etcd.resume()
        taker = waiter_side.lock(lock_name)
        assert taker.acquire(blocking=10)
        assert first_token is not None and taker.token is not None
        assert taker.token > first_token
        taker.release()
        with pytest.raises(conch.LockLost):
            held.release()
        assert held.acquire(blocking=5), "the holder's session got a new lease"
        held.release()
    print(f"\nholder told of the loss {told:.2f} s into the pause (ttl 2 s)")
    assert told < 2.0, "told only after etcd could have expired the lease"


def test_a_server_restart_with_its_data_keeps_or_reports_the_hold_never_two_holders(
    own_etcd: EtcdServer, lock_name: str
) -> None:
    url = own_etcd.url(ttl=3)
    with conch.connect(url) as holder_side, conch.connect(url) as waiter_side:
        held = holder_side.lock(lock_name)
        held.acquire()
        first_token = held.token
        waiter = Waiter(waiter_side.lock(lock_name))
        time.sleep(0.3)
        own_etcd.restart()
        restarted = time.monotonic()
        while time.monotonic() < restarted + 5:  # across several keep-alives
            assert not (held.held and not waiter.waiting and waiter.acquired), "two holders"
            time.sleep(0.01)
        kept = held.held
        if kept:
            assert waiter.waiting, waiter.error
            held.release()
        assert waiter.result(timeout=15) is True
        assert first_token is not None and waiter.lock.token is not None
        assert waiter.lock.token > first_token
        waiter.lock.release()
    print(f"\nafter a restart the holder {'kept' if kept else 'was told it lost'} its lock")


def test_a_forked_child_never_touches_its_parents_lease_or_keys(
    etcd_server: EtcdServer, etcd_url: str, lock_name: str
) -> None:
    with conch.connect(etcd_url) as coordinator:
        held = coordinator.lock(lock_name)
        assert held.acquire(blocking=False)
        parents_lease = backend_of(coordinator).session.lease().id
        child = os.fork()
        if child == 0:
            exit_code = 1
            try:
                held.release()  # the parent's hold: the child must leave its key alone
                own = coordinator.lock(f"{lock_name}-child")
                assert own.acquire(blocking=5.0)
                exit_code = 2 if backend_of(coordinator).session.lease().id == parents_lease \
                    else 0
                coordinator.stop()  # revokes the child's lease, not the parent's
            finally:
                os._exit(exit_code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(name_keys(etcd_server, etcd_url, lock_name)) == 1, "still the parent's"
        assert parents_lease in etcd_server.lease_ids()
        time.sleep(3 / 3 + 0.5)  # a renewal and a key check of the parent's session
        assert held.held and not held.lost.is_set()
        assert name_keys(etcd_server, etcd_url, f"{lock_name}-child") == []
        held.release()


def test_stop_ends_a_wait_in_progress(etcd_url: str, lock_name: str) -> None:
    with conch.connect(etcd_url) as holder_side:
        holder_side.lock(lock_name).acquire()
        coordinator = conch.connect(etcd_url)
        waiter = Waiter(coordinator.lock(lock_name))
        time.sleep(0.3)
        coordinator.stop()
        with pytest.raises(conch.NotStarted):
            waiter.result(timeout=5)


def test_an_expired_auth_token_is_renewed(lock_name: str) -> None:
    server = EtcdServer(password="auth-pw")
    try:
        server.launch("--auth-token-ttl", "1")
        # The lease is renewed every 2 s, the token expires after 1 s unused.
        with conch.connect(server.url(ttl=6)) as coordinator:
            lock = coordinator.lock(lock_name)
            lock.acquire()
            time.sleep(4.5)
            assert lock.held and not lock.lost.is_set()
            lock.release()
            assert lock.acquire(blocking=False)
            lock.release()
    finally:
        server.cleanup()


def test_wrong_or_missing_credentials_are_one_clear_error(etcd_server: EtcdServer) -> None:
    assert etcd_server.password is not None
    wrong = etcd_server.url().replace(etcd_server.password, "not-the-password")
    with pytest.raises(conch.BackendUnavailable) as raised:
        conch.connect(wrong)
    message = str(raised.value)
    assert "refused user 'root'" in message and "authentication failed" in message
    assert "not-the-password" not in message and etcd_server.password not in message
    anonymous = f"etcd://{etcd_server.endpoint}/x"
    with pytest.raises(conch.BackendUnavailable, match="user name is empty"):
        conch.connect(anonymous)


def test_an_unreachable_server_is_one_clear_error_without_the_password() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(conch.BackendUnavailable) as raised:
            conch.connect(f"etcd://root:s3cret@127.0.0.1:{port}")
    assert str(raised.value) == f"etcd at 127.0.0.1:{port} is unreachable (connection refused)"
    assert time.monotonic() - started < 2.0


def test_a_server_that_never_answers_fails_within_the_timeouts() -> None:
    with socket.socket() as silent:  # accepts TCP connections, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(conch.BackendUnavailable) as raised:
            conch.connect(f"etcd://root:s3cret@127.0.0.1:{port}?connect_timeout=1&timeout=1")
        took = time.monotonic() - started
    assert "timed out" in str(raised.value) and "s3cret" not in str(raised.value)
    assert took < 3.0


def test_a_second_endpoint_is_used_when_the_first_refuses(etcd_server: EtcdServer,
                                                          lock_name: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"
    url = etcd_server.url().replace(etcd_server.endpoint, f"{dead},{etcd_server.endpoint}")
    with conch.connect(url) as coordinator, coordinator.lock(lock_name) as lock:
        assert lock.token is not None


@pytest.mark.parametrize("url", [
    "etcd://root:s3cret@127.0.0.1:2379?ttl=soon",
    "etcd://root:s3cret@127.0.0.1:2379?ttl=0",
    "etcd://root:s3cret@127.0.0.1:2379?ttl=1.5",
    "etcd://root:s3cret@127.0.0.1:2379?timeout=-1",
    "etcd://root:s3cret@127.0.0.1:2379?connect_timeout=",
    "etcd://root:s3cret@127.0.0.1:2379?lease=3",
    "etcd://:s3cret@127.0.0.1:2379",
    "etcd://root:s3cret@127.0.0.1:99999",
    "etcd://root:s3cret@127.0.0.1:2379,127.0.0.1:/x",
])
def test_malformed_urls_are_one_clear_error_without_the_password(url: str) -> None:
    with pytest.raises(conch.InvalidURL) as raised:
        conch.connect(url)
    assert "s3cret" not in str(raised.value)
