"""Stopping a coordinator while its lock objects wait: the waits raise NotStarted and
leave nothing held.

A waiting acquire ends promptly where the backend's close can end the wait (a woken
condition, a closed connection or session). Where it cannot, the difference is
recorded in :data:`UNINTERRUPTIBLE` and checked as such: the wait ends when the lock
is granted (and the shared code gives it back at once) or at its deadline.
"""

from __future__ import annotations

import time

import pytest

import conch
from conch.backends.base import Deadline, LockHandle
from conch.coordinator import Coordinator
from conch.lock import Blocking, Lock
from tests.contract.waiting import Waiter, handoff_bound

STOP_BOUND = 1.5
"""Seconds from the start of ``stop()`` to a woken waiter's NotStarted. Every backend
that can end the wait does so within about 0.1 s (close wakes the waiter, or closes
the connection or session it waits on, or ends the server-side wait: mysql's KILL QUERY);
the rest is slack for a loaded machine.
Waiting forever instead still fails."""

GIVEN_BACK_BOUND = 1.0
"""Seconds a probe may wait for a hold given back before ``NotStarted`` was raised:
well under the short TTLs of the test servers (3 s), so a hold left to expire fails."""

WAIT_BEFORE_STOP = 0.3
STOPPED_WHILE_AWAITED = r"stopped while (the )?lock .*awaited"

UNINTERRUPTIBLE: dict[tuple[str, Blocking], str] = {
    ("file", True): "a blocking flock cannot be interrupted by closing the backend",
}
"""(scheme, blocking) whose waits, through the sync API, outlast ``stop()`` until the
lock is granted (or their deadline passes). conch.aio ends every wait at once."""


def _interruptible(coordinator: conch.Coordinator, blocking: Blocking) -> bool:
    scheme = coordinator.url.split("://", 1)[0]
    sync = isinstance(coordinator, Coordinator)
    return not (sync and (scheme, blocking) in UNINTERRUPTIBLE)


def test_waiters_raise_not_started_when_their_coordinator_stops_and_hold_nothing(
    url: str, coordinator: conch.Coordinator, other_coordinator: conch.Coordinator,
    lock_name: str,
) -> None:
    holder = coordinator.lock(lock_name)
    assert holder.acquire()
    stopping = conch.connect(url)
    waiters = {blocking: Waiter(stopping.lock(lock_name), blocking) for blocking in (True, 30.0)}
    time.sleep(WAIT_BEFORE_STOP)
    assert all(waiter.waiting for waiter in waiters.values()), "returned while held"
    stopped_at = time.monotonic()
    stopping.stop()
    for blocking, waiter in waiters.items():
        if _interruptible(stopping, blocking):
            with pytest.raises(conch.NotStarted, match=STOPPED_WHILE_AWAITED) as raised:
                waiter.result(timeout=STOP_BOUND + 10)
            took = waiter.returned_at - stopped_at
            assert took < STOP_BOUND, f"blocking={blocking}: ended {took:.2f} s after stop"
            assert stopping.member_id in str(raised.value)
    released_at = time.monotonic()
    holder.release()
    bound = handoff_bound(coordinator.capabilities)
    for waiter in waiters.values():  # the uninterruptible ones get it now, and give it back
        with pytest.raises(conch.NotStarted, match=STOPPED_WHILE_AWAITED):
            waiter.result(timeout=bound + 10)
        assert not waiter.lock.held
    probe = other_coordinator.lock(lock_name)
    assert probe.acquire(blocking=bound), "a hold was left by a stopped waiter"
    took = time.monotonic() - released_at
    assert took < 2 * bound, f"the lock was free only {took:.2f} s after its release"
    probe.release()


def test_acquire_on_a_lock_of_a_stopped_coordinator_raises_not_started_at_once(
    url: str, lock_name: str
) -> None:
    member = conch.connect(url)
    idle = member.lock(lock_name)
    held = member.lock(f"{lock_name}-held")
    assert held.acquire()
    member.stop()
    assert held.lost.is_set()
    for lock in (idle, held):  # ``held`` is never released: it must not wait for itself
        for blocking in (True, 30.0, False):
            started = time.monotonic()
            with pytest.raises(conch.NotStarted):
                lock.acquire(blocking)
            assert time.monotonic() - started < 1.0
            assert not lock.held and lock.token is None


class _StopsOnGrant(LockHandle):
    """A backend handle whose grant reaches the lock only after its coordinator stopped,
    as when the backend grants the lock just as ``stop()`` runs."""

    def __init__(self, handle: LockHandle, coordinator: conch.Coordinator) -> None:
        self._handle = handle
        self._coordinator = coordinator

    def acquire(self, deadline: Deadline) -> int | None:
        token = self._handle.acquire(deadline)
        self._coordinator.stop()
        return token

    def release(self) -> None:
        self._handle.release()


def test_a_hold_granted_as_the_coordinator_stops_is_given_back(
    url: str, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    member = conch.connect(url)
    lock = member.lock(lock_name)
    if not isinstance(lock, Lock):
        member.stop()
        pytest.skip("conch.aio gives back such a hold in its queue (tests/aio)")
    lock._handle = _StopsOnGrant(lock._handle, member)
    with pytest.raises(conch.NotStarted, match=STOPPED_WHILE_AWAITED):
        lock.acquire(blocking=10)
    assert not lock.held and lock.token is None and not lock.lost.is_set()
    probe = other_coordinator.lock(lock_name)
    # Released before NotStarted was raised: free at once, not when a TTL ran out.
    assert probe.acquire(blocking=GIVEN_BACK_BOUND), \
        "the hold granted as the coordinator stopped was kept"
    probe.release()
