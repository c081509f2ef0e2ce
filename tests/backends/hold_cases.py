"""Cases of shared locks, semaphores and locks that the SQL backends' own tests run on their
URLs (the contract runs on every backend; these need a backend's server around them)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import conch
from tests.contract.waiting import Waiter


def another_limit_is_refused_while_held(url: str, name: str) -> None:
    """A limit other than the holders' is refused and takes nothing; once no permit is
    held, a new limit is accepted."""
    with conch.connect(url) as coordinator:
        held = coordinator.semaphore(name, 2)
        assert held.acquire()
        with pytest.raises(conch.LimitMismatch, match="limit 2, not 3"):
            coordinator.semaphore(name, 3).acquire(blocking=5)
        second = coordinator.semaphore(name, 2)
        assert second.acquire(blocking=False)
        assert coordinator.semaphore(name, 2).acquire(blocking=False) is False
        second.release()
        held.release()
        other_limit = coordinator.semaphore(name, 3)
        assert other_limit.acquire(blocking=False)
        other_limit.release()


def a_permit_and_a_lock_of_one_name_are_apart(url: str, name: str) -> None:
    """A semaphore and a lock of one name do not exclude each other; only the lock is
    listed."""
    with conch.connect(url) as coordinator:
        lock, permit = coordinator.lock(name), coordinator.semaphore(name, 1)
        assert lock.acquire(blocking=False) and permit.acquire(blocking=False)
        assert [info.name for info in coordinator.holders(name)] == [name]
        lock.release()
        permit.release()


Hold = conch.Semaphore | conch.Lock
HoldOf = Callable[[conch.Coordinator], Hold]
"""Makes a coordinator's hold of the name a test uses (a lock, shared or not, or a permit)."""


def stop_ends_a_wait(url: str, hold_of: HoldOf, wait_of: HoldOf | None = None) -> None:
    """``stop()`` ends a wait (for the hold ``wait_of`` makes, else ``hold_of``) in
    progress, behind the hold ``hold_of`` makes: NotStarted, promptly."""
    with conch.connect(url) as holder:
        assert hold_of(holder).acquire()
        coordinator = conch.connect(url)
        waiter = Waiter((wait_of or hold_of)(coordinator), True)
        time.sleep(0.2)
        started = time.monotonic()
        coordinator.stop()
        with pytest.raises(conch.NotStarted):
            waiter.result(timeout=5.0)
        assert time.monotonic() - started < 3.0


def a_release_lets_a_waiter_in(url: str, name: str) -> None:
    """A permit released is taken by a waiter of another coordinator (over ``url``)."""
    with conch.connect(url) as one, conch.connect(url) as two:
        permit = one.semaphore(name, 1)
        assert permit.acquire(blocking=False)
        waiter = Waiter(two.semaphore(name, 1), 5)
        time.sleep(0.2)
        permit.release()
        assert waiter.result(timeout=5.0)
        waiter.lock.release()


def handoffs(holder: Hold, waiter_of: Callable[[], Hold], wait: float = 0.2) -> list[float]:
    """Seconds from each of three releases of ``holder`` to the return of a waiter made by
    ``waiter_of`` that waited ``wait`` seconds before it."""
    delays = []
    for _ in range(3):
        assert holder.acquire()
        waiter = Waiter(waiter_of(), 10)
        time.sleep(wait)
        assert waiter.waiting
        started = time.monotonic()
        holder.release()
        assert waiter.result(timeout=5.0)
        delays.append(time.monotonic() - started)
        waiter.lock.release()
    return delays
