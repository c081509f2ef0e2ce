"""tooz's lock API on every backend, used the way Tacker, Cinder and Manila use it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import conch
import conch.compat.tooz as tooz
from conch.compat.tooz import coordination
from tests.servers.base import free_port

Driver = coordination.CoordinationDriver


def hold_in_thread(coordinator: Driver, name: bytes, seconds: float) -> threading.Thread:
    """Start a thread that takes ``name`` with ``with lock:``, holds it ``seconds``, and
    releases it; return once the lock is held."""
    held = threading.Event()

    def run() -> None:
        with coordinator.get_lock(name):
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(10), "the holder thread did not get the lock"
    return thread


@pytest.fixture
def vnf_lock_name(lock_name: str) -> bytes:
    """A lock name as Tacker builds it: prefix + VNF id, ASCII bytes."""
    return f"tacker-{lock_name}".encode("ascii")


def test_nonblocking_acquire_fails_while_another_thread_holds_the_vnf_lock(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    holder = hold_in_thread(tooz_coordinator, vnf_lock_name, 0.3)
    contender = other_tooz_coordinator.get_lock(vnf_lock_name)
    assert contender.acquire(blocking=False) is False
    holder.join(10)
    assert contender.acquire(blocking=False) is True
    assert contender.release() is True


def test_timed_acquire_waits_for_a_holder_that_sleeps(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    holder = hold_in_thread(tooz_coordinator, vnf_lock_name, 0.5)
    contender = other_tooz_coordinator.get_lock(vnf_lock_name)
    started = time.monotonic()
    assert contender.acquire(blocking=3) is True
    waited = time.monotonic() - started
    assert 0.2 <= waited < 3, f"the holder slept 0.5 s; waited {waited:.3f} s"
    assert contender.release() is True
    holder.join(10)


@pytest.mark.parametrize(("blocking", "timeout"), [(0.5, None), (True, 0.5)],
                         ids=["blocking=0.5", "blocking=True,timeout=0.5"])
def test_timed_acquire_returns_false_when_the_wait_expires(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, vnf_lock_name: bytes,
    blocking: bool | float, timeout: float | None,
) -> None:
    # tooz 9 raises tenacity's RetryError here on etcd, PostgreSQL, MySQL and memcached, and
    # kazoo's LockTimeout on ZooKeeper; conch returns False on every backend.
    assert tooz_coordinator.get_lock(vnf_lock_name).acquire()
    contender = other_tooz_coordinator.get_lock(vnf_lock_name)
    started = time.monotonic()
    assert contender.acquire(blocking, False, timeout) is False
    waited = time.monotonic() - started
    assert 0.45 <= waited < 2.5, f"asked to wait 0.5 s, waited {waited:.3f} s"


def test_with_lock_blocking_false_raises_lock_acquire_failed_when_held(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    assert tooz_coordinator.get_lock(vnf_lock_name).acquire()
    ran = False
    with pytest.raises(coordination.LockAcquireFailed) as failure:  # noqa: SIM117
        with other_tooz_coordinator.get_lock(vnf_lock_name)(False):
            ran = True
    assert not ran
    assert isinstance(failure.value, tooz.ToozError)
    assert isinstance(failure.value, conch.LockAcquireFailed)


def test_with_lock_runs_the_body_while_held_and_releases_after(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    lock = tooz_coordinator.get_lock(vnf_lock_name)
    with lock as entered:
        assert entered is lock
        assert lock.is_still_owner()
        assert not other_tooz_coordinator.get_lock(vnf_lock_name).acquire(blocking=False)
    assert not lock.is_still_owner()
    with lock(True):
        pass
    assert other_tooz_coordinator.get_lock(vnf_lock_name).acquire(blocking=False)


def test_release_reports_whether_this_object_held_the_lock(
    tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    lock = tooz_coordinator.get_lock(vnf_lock_name)
    assert lock.release() is False  # never acquired
    assert lock.acquire() is True
    assert lock.release() is True
    assert lock.release() is False  # already released


def test_name_is_what_get_lock_got_and_str_and_bytes_are_one_lock(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, lock_name: str
) -> None:
    as_bytes = tooz_coordinator.get_lock(lock_name.encode())
    as_str = other_tooz_coordinator.get_lock(lock_name)
    assert as_bytes.name == lock_name.encode()
    assert as_str.name == lock_name
    assert as_bytes.acquire()
    assert not as_str.acquire(blocking=False)


def test_stop_frees_held_locks_and_their_release_returns_false(
    tooz_url: str, other_tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    coordinator = coordination.get_coordinator(tooz_url, b"conductor-3")
    coordinator.start()
    lock = coordinator.get_lock(vnf_lock_name)
    assert lock.acquire()
    coordinator.stop()
    assert not lock.is_still_owner()
    assert lock.release() is False
    assert other_tooz_coordinator.get_lock(vnf_lock_name).acquire(blocking=False)


def test_leaving_with_after_the_hold_was_lost_raises_lock_lost(
    tooz_url: str, vnf_lock_name: bytes
) -> None:
    coordinator = coordination.get_coordinator(tooz_url, b"conductor-4")
    coordinator.start()
    lock = coordinator.get_lock(vnf_lock_name)
    with pytest.raises(coordination.LockLost) as raised, lock:
        coordinator.stop()  # the hold ends under the body's feet
    assert isinstance(raised.value, coordination.ToozError)
    assert isinstance(raised.value, conch.LockLost)


def test_break_frees_the_lock_where_the_backend_can_break_locks(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    holder = tooz_coordinator.get_lock(vnf_lock_name)
    assert holder.acquire()
    breaker = other_tooz_coordinator.get_lock(vnf_lock_name)
    if not other_tooz_coordinator.conch_coordinator.capabilities.breakable:
        with pytest.raises(tooz.NotImplemented):
            breaker.break_()
        return
    assert breaker.break_() is True
    assert breaker.acquire(blocking=5)
    assert breaker.release()


def test_shared_locks_raise_not_implemented_where_the_backend_has_none(
    tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    if tooz_coordinator.conch_coordinator.capabilities.shared_locks:
        pytest.skip("the backend has shared locks")
    with pytest.raises(tooz.NotImplemented, match="shared locks"):
        tooz_coordinator.get_lock(vnf_lock_name).acquire(shared=True)


def test_shared_holds_coexist_and_exclude_an_exclusive_one(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, vnf_lock_name: bytes
) -> None:
    if not tooz_coordinator.conch_coordinator.capabilities.shared_locks:
        pytest.skip("the backend has no shared locks")
    reader, other_reader = (coordinator.get_lock(vnf_lock_name)
                            for coordinator in (tooz_coordinator, other_tooz_coordinator))
    writer = other_tooz_coordinator.get_lock(vnf_lock_name)
    assert reader.acquire(shared=True)
    assert other_reader.acquire(blocking=False, shared=True)
    assert reader.is_still_owner() and reader.conch_lock.token is not None
    assert writer.acquire(blocking=False) is False
    assert reader.release() and other_reader.release()
    with writer(blocking=5):
        assert reader.acquire(blocking=False, shared=True) is False
        assert reader.acquire(blocking=False) is False
    with reader(True, True):  # tooz's positional (blocking, shared)
        assert other_reader.acquire(blocking=False, shared=True)
        assert other_reader.release()
    assert reader.release() is False  # the with block released it


def test_a_conch_url_works_as_is(url: str, lock_name: str) -> None:
    coordinator = coordination.get_coordinator(url, "member")
    coordinator.start()
    try:
        lock = coordinator.get_lock(lock_name)
        assert lock.acquire(blocking=False)
        assert lock.conch_lock.token is not None
        assert lock.release()
    finally:
        coordinator.stop()


@pytest.fixture
def unreachable_redis() -> Iterator[str]:
    yield f"redis://127.0.0.1:{free_port()}?socket_connect_timeout=1"


def test_an_unreachable_backend_raises_tooz_connection_error(unreachable_redis: str) -> None:
    coordinator = coordination.get_coordinator(unreachable_redis, b"member")
    with pytest.raises(coordination.ToozConnectionError) as failure:
        coordinator.start()
    assert isinstance(failure.value, tooz.ToozError)
    assert isinstance(failure.value, conch.BackendUnavailable)
    assert not coordinator.is_started
