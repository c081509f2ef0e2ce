"""A first contract check; the full suite lives beside it."""

from __future__ import annotations

import conch


def test_acquire_and_release_on_every_backend(coordinator: conch.Coordinator,
                                               lock_name: str) -> None:
    lock = coordinator.lock(lock_name)
    assert lock.acquire(blocking=False) is True
    assert lock.held and lock.token is not None
    lock.release()
    assert not lock.held and lock.token is None
