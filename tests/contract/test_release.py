"""Releasing: ``LockNotHeld`` for a lock not held, and ``with lock`` / ``with lock(blocking)``."""

from __future__ import annotations

import time

import pytest

import conch


def test_release_of_a_lock_never_acquired_raises_lock_not_held(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    with pytest.raises(conch.LockNotHeld):
        coordinator.lock(lock_name).release()


def test_second_release_raises_lock_not_held(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    lock = coordinator.lock(lock_name)
    assert lock.acquire()
    lock.release()
    with pytest.raises(conch.LockNotHeld):
        lock.release()
    assert lock.acquire(blocking=False), "the failed release left the object unusable"
    lock.release()


def test_release_by_an_object_that_is_not_the_holder_raises_and_keeps_the_hold(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    holder = coordinator.lock(lock_name)
    assert holder.acquire()
    for stranger in (coordinator.lock(lock_name), other_coordinator.lock(lock_name)):
        with pytest.raises(conch.LockNotHeld):
            stranger.release()
    assert holder.held
    assert other_coordinator.lock(lock_name).acquire(blocking=False) is False
    holder.release()


def test_release_after_a_failed_acquire_raises_lock_not_held(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    holder = coordinator.lock(lock_name)
    assert holder.acquire()
    contender = other_coordinator.lock(lock_name)
    assert contender.acquire(blocking=0.1) is False
    with pytest.raises(conch.LockNotHeld):
        contender.release()
    assert holder.held
    holder.release()


@pytest.mark.core
def test_with_lock_holds_inside_and_releases_on_exit(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    lock = coordinator.lock(lock_name)
    with lock as entered:
        assert entered is lock
        assert lock.held
        assert other_coordinator.lock(lock_name).acquire(blocking=False) is False
    assert not lock.held and lock.token is None
    contender = other_coordinator.lock(lock_name)
    assert contender.acquire(blocking=False) is True
    contender.release()


@pytest.mark.parametrize("blocking", [True, False, 0, 5.0], ids=["True", "False", "0", "5.0"])
def test_with_lock_called_with_blocking_holds_inside_when_free(
    coordinator: conch.Coordinator, lock_name: str, blocking: bool | float
) -> None:
    lock = coordinator.lock(lock_name)
    with lock(blocking=blocking) as entered:
        assert entered is lock and lock.held
    assert not lock.held


@pytest.mark.parametrize("blocking", [False, 0, 0.3], ids=["False", "0", "0.3"])
def test_with_lock_raises_lock_acquire_failed_when_held_elsewhere(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str,
    blocking: bool | float,
) -> None:
    assert coordinator.lock(lock_name).acquire()
    contender = other_coordinator.lock(lock_name)
    ran = False
    started = time.monotonic()
    with pytest.raises(conch.LockAcquireFailed, match=lock_name) as raised, \
            contender(blocking=blocking):
        ran = True
    waited = time.monotonic() - started
    assert not ran, "the body ran without the lock"
    assert isinstance(raised.value, conch.ConchError)
    assert waited >= (blocking if blocking is not False else 0) * 0.9
    assert not contender.held


@pytest.mark.parametrize("form", ["with lock", "with lock(blocking=5)"])
def test_exception_in_the_body_releases_the_lock_and_propagates(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str,
    form: str,
) -> None:
    lock = coordinator.lock(lock_name)

    class BodyFailed(Exception):
        pass

    with pytest.raises(BodyFailed), lock if form == "with lock" else lock(blocking=5):
        assert lock.held
        raise BodyFailed
    assert not lock.held
    contender = other_coordinator.lock(lock_name)
    assert contender.acquire(blocking=False) is True
    contender.release()


def test_one_lock_object_serves_successive_with_blocks(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    lock = coordinator.lock(lock_name)
    for _ in range(3):
        with lock:
            assert lock.held
        assert not lock.held
