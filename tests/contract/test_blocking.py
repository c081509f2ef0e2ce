"""The blocking contract: ``acquire(blocking=True | False | seconds)`` and who may hold."""

from __future__ import annotations

import math
import threading
import time

import pytest

import conch
from tests.contract.waiting import Waiter

ONE_TRY_BOUND = 1.0
"""Seconds a single attempt may take on a loaded machine (a few round-trips)."""


@pytest.mark.core
@pytest.mark.parametrize("blocking", [True, False, 0, 0.0, 1, 2.5, math.inf],
                         ids=["True", "False", "0", "0.0", "1", "2.5", "inf"])
def test_every_blocking_mode_returns_true_when_free(
    coordinator: conch.Coordinator, lock_name: str, blocking: bool | float
) -> None:
    lock = coordinator.lock(lock_name)
    assert lock.acquire(blocking=blocking) is True
    assert lock.held
    lock.release()
    assert not lock.held


@pytest.mark.core
@pytest.mark.parametrize("blocking", [False, 0, 0.0], ids=["False", "0", "0.0"])
def test_one_try_returns_false_at_once_when_held_elsewhere(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str,
    blocking: bool | float,
) -> None:
    assert coordinator.lock(lock_name).acquire()
    contender = other_coordinator.lock(lock_name)
    started = time.monotonic()
    assert contender.acquire(blocking=blocking) is False
    assert time.monotonic() - started < ONE_TRY_BOUND
    assert not contender.held and contender.token is None


@pytest.mark.core
def test_timeout_returns_false_after_about_the_asked_time_when_held_elsewhere(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    assert coordinator.lock(lock_name).acquire()
    contender = other_coordinator.lock(lock_name)
    started = time.monotonic()
    assert contender.acquire(blocking=0.5) is False
    waited = time.monotonic() - started
    assert 0.45 <= waited < 2.5, f"asked to wait 0.5 s, waited {waited:.3f} s"
    assert not contender.held


@pytest.mark.parametrize("blocking", [False, 0.3], ids=["one-try", "timed"])
def test_a_failed_acquire_leaves_no_claim_behind(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str,
    blocking: bool | float,
) -> None:
    holder = coordinator.lock(lock_name)
    assert holder.acquire()
    assert other_coordinator.lock(lock_name).acquire(blocking=blocking) is False
    holder.release()
    newcomer = other_coordinator.lock(lock_name)
    assert newcomer.acquire(blocking=False) is True, "the failed acquire still queues or holds"
    newcomer.release()


@pytest.mark.core
def test_wait_forever_returns_true_once_the_holder_releases(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    holder = coordinator.lock(lock_name)
    assert holder.acquire()
    waiter = Waiter(other_coordinator.lock(lock_name), blocking=True)
    time.sleep(0.3)
    assert waiter.waiting, "blocking=True returned while the lock was held elsewhere"
    holder.release()
    assert waiter.result(timeout=10) is True
    assert waiter.lock.held
    waiter.lock.release()


@pytest.mark.parametrize("blocking", [-1, -0.001, -math.inf, math.nan],
                         ids=["-1", "-0.001", "-inf", "nan"])
def test_negative_or_nan_blocking_raises_value_error(
    coordinator: conch.Coordinator, lock_name: str, blocking: float
) -> None:
    lock = coordinator.lock(lock_name)
    with pytest.raises(ValueError, match="blocking"):
        lock.acquire(blocking=blocking)
    with pytest.raises(ValueError, match="blocking"):
        lock(blocking=blocking)
    assert not lock.held
    assert coordinator.lock(lock_name).acquire(blocking=False), "a rejected call took the lock"


@pytest.mark.parametrize("blocking", ["1", None, b"1", [1]], ids=["str", "None", "bytes", "list"])
def test_blocking_of_another_type_raises_type_error(
    coordinator: conch.Coordinator, lock_name: str, blocking: object
) -> None:
    lock = coordinator.lock(lock_name)
    with pytest.raises(TypeError, match="blocking"):
        lock.acquire(blocking=blocking)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="blocking"):
        lock(blocking=blocking)  # type: ignore[arg-type]
    assert not lock.held


def test_two_lock_objects_for_one_name_in_one_coordinator_exclude_each_other(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    first, second = coordinator.lock(lock_name), coordinator.lock(lock_name)
    assert first.acquire(blocking=False)
    assert second.acquire(blocking=False) is False
    assert second.acquire(blocking=0.2) is False
    first.release()
    assert second.acquire(blocking=False) is True
    assert first.acquire(blocking=False) is False
    second.release()


@pytest.mark.core
def test_two_coordinators_exclude_each_other(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    mine, theirs = coordinator.lock(lock_name), other_coordinator.lock(lock_name)
    assert mine.acquire(blocking=False)
    assert theirs.acquire(blocking=False) is False
    mine.release()
    assert theirs.acquire(blocking=False) is True
    assert mine.acquire(blocking=False) is False
    theirs.release()


def test_one_coordinator_holds_many_names_at_once(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    locks = [coordinator.lock(f"{lock_name}-{index}") for index in range(20)]
    for lock in locks:
        assert lock.acquire(blocking=5)
    assert other_coordinator.lock(f"{lock_name}-7").acquire(blocking=False) is False
    for lock in locks:
        lock.release()


def test_a_waiter_does_not_hold_up_other_locks_of_its_coordinator(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    holder = other_coordinator.lock(lock_name)
    assert holder.acquire()
    waiter = Waiter(coordinator.lock(lock_name), blocking=True)
    time.sleep(0.2)
    started = time.monotonic()
    for index in range(3):
        with coordinator.lock(f"{lock_name}-{index}"):
            pass
    assert time.monotonic() - started < 3 * ONE_TRY_BOUND, "the waiter stalled its coordinator"
    assert waiter.waiting
    holder.release()
    assert waiter.result(timeout=10) is True
    waiter.lock.release()


def test_same_object_acquire_while_held_times_out(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    lock = coordinator.lock(lock_name)
    assert lock.acquire()
    token = lock.token
    assert lock.acquire(blocking=False) is False
    started = time.monotonic()
    assert lock.acquire(blocking=0.3) is False
    assert time.monotonic() - started >= 0.25
    assert lock.held and lock.token == token, "a failed re-acquire disturbed the hold"
    lock.release()
    assert not lock.held


def test_same_object_acquire_while_held_waits_for_the_release(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    lock = coordinator.lock(lock_name)
    assert lock.acquire()
    waiter = Waiter(lock, blocking=True)
    time.sleep(0.2)
    assert waiter.waiting, "acquire on an object that holds its lock did not wait"
    lock.release()
    assert waiter.result(timeout=10) is True
    assert lock.held
    lock.release()


def test_any_thread_may_release(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    lock = coordinator.lock(lock_name)
    assert lock.acquire()
    errors: list[BaseException] = []

    def release() -> None:
        try:
            lock.release()
        except BaseException as exc:
            errors.append(exc)

    releaser = threading.Thread(target=release)
    releaser.start()
    releaser.join(10)
    assert not errors, errors
    assert not lock.held
    contender = other_coordinator.lock(lock_name)
    assert contender.acquire(blocking=5) is True
    contender.release()
