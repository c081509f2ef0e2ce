"""Edge cases of the shared Lock logic that no real backend can be made to hit on cue.

The handle below is not a backend: it drives ``conch.lock.Lock`` through the
exact interleaving under test (a loss reported while ``acquire`` is returning).
"""

from __future__ import annotations

import pytest

import conch
from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.hold_state import Membership
from conch.lock import Lock


class _LosesDuringAcquire(LockHandle):
    """Reports its hold lost before ``acquire`` returns, as a session drop would; then
    grants ``grants`` (``None``: not taken)."""

    def __init__(self, on_lost: LossCallback) -> None:
        self.on_lost = on_lost
        self.released = 0
        self.grants: list[int | None] = [7]
        self.loses = True

    def acquire(self, deadline: Deadline) -> int | None:
        if self.loses:
            self.on_lost("session expired")
        return self.grants.pop(0)

    def release(self) -> None:
        self.released += 1


def _lock() -> tuple[Lock, list[_LosesDuringAcquire]]:
    handles: list[_LosesDuringAcquire] = []

    def make(on_lost: LossCallback) -> _LosesDuringAcquire:
        handles.append(_LosesDuringAcquire(on_lost))
        return handles[-1]

    return Lock("vnf-42", make, str, Membership("a test")), handles


def test_a_loss_reported_while_acquiring_is_not_forgotten() -> None:
    lock, handles = _lock()
    assert lock.acquire(blocking=False) is True
    assert lock.lost.is_set() and not lock.held and lock.token is None
    with pytest.raises(conch.LockLost):
        lock.release()
    assert handles[0].released == 1  # the backend's hold is still cleaned up


def test_a_loss_reported_by_an_acquire_that_failed_does_not_touch_the_next_hold() -> None:
    lock, handles = _lock()
    handles[0].grants = [None, 8]
    assert lock.acquire(blocking=False) is False
    handles[0].loses = False
    assert lock.acquire(blocking=False) is True
    assert lock.held and lock.token == 8 and not lock.lost.is_set()
    lock.release()
    assert not lock.held and lock.token is None


def test_release_during_no_hold_raises_lock_not_held() -> None:
    lock, _ = _lock()
    with pytest.raises(conch.LockNotHeld):
        lock.release()
