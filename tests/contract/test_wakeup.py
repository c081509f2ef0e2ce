"""Waiters are woken by the release, not by a slow poll."""

from __future__ import annotations

import time

import pytest

import conch
from tests.contract.waiting import FAST_HANDOFF, Waiter, handoff_bound

ROUNDS = 3
WAIT_BEFORE_RELEASE = 0.2


@pytest.mark.core
@pytest.mark.parametrize("blocking", [True, 30.0], ids=["forever", "timed"])
@pytest.mark.parametrize("waiting_in", ["other-coordinator", "same-coordinator"])
def test_waiter_returns_promptly_when_the_holder_releases(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str,
    blocking: bool | float, waiting_in: str,
) -> None:
    bound = handoff_bound(coordinator.capabilities)
    member = other_coordinator if waiting_in == "other-coordinator" else coordinator
    holder = coordinator.lock(lock_name)
    assert holder.acquire()
    handoffs = []
    for _ in range(ROUNDS):
        waiter = Waiter(member.lock(lock_name), blocking)
        time.sleep(WAIT_BEFORE_RELEASE)
        assert waiter.waiting, "the waiter returned while the lock was held"
        released = time.monotonic()
        holder.release()
        assert waiter.result(timeout=bound + 10) is True
        handoffs.append(waiter.returned_at - released)
        waiter.lock.release()
        assert holder.acquire(blocking=10)
    holder.release()
    shown = ", ".join(f"{handoff:.3f}" for handoff in handoffs)
    assert max(handoffs) < bound, f"hand-offs took {shown} s (bound {bound} s)"
    if coordinator.capabilities.notify:
        assert min(handoffs) < FAST_HANDOFF, \
            f"hand-offs took {shown} s: a backend declaring notify polls instead"


def test_each_release_wakes_exactly_one_of_several_waiters(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    bound = handoff_bound(coordinator.capabilities)
    holder = coordinator.lock(lock_name)
    assert holder.acquire()
    pending = [Waiter(member.lock(lock_name), blocking=30.0)
               for member in (coordinator, other_coordinator, other_coordinator)]
    time.sleep(WAIT_BEFORE_RELEASE)
    handoffs = []
    releasing: conch.Lock | conch.Semaphore = holder
    while pending:
        released = time.monotonic()
        releasing.release()
        woken = _first_to_return(pending, timeout=bound + 10)
        assert woken.result(timeout=0) is True
        pending.remove(woken)
        assert all(waiter.waiting for waiter in pending), "two waiters returned on one release"
        handoffs.append(woken.returned_at - released)
        releasing = woken.lock
    releasing.release()
    assert max(handoffs) < bound, f"hand-offs took {handoffs} s (bound {bound} s)"


def _first_to_return(waiters: list[Waiter], timeout: float) -> Waiter:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for waiter in waiters:
            if not waiter.waiting:
                return waiter
        time.sleep(0.002)
    raise AssertionError(f"no waiter took the released lock within {timeout} s")
