"""Shared locks on every backend that declares ``shared_locks``: shared holds coexist, an
exclusive hold excludes everyone, a waiting exclusive hold is not starved by new shared
ones; safe across processes (no exclusive section overlaps any other)."""

from __future__ import annotations

import pathlib
import time

import pytest

import conch
from conch.history_shared import exclusion_violations
from tests.contract.conftest import declared_only
from tests.contract.hold_checks import (
    assert_stop_ends,
    sections_across_processes,
    taken_after_the_holder_is_killed,
)
from tests.contract.waiting import Waiter, handoff_bound

_declared = declared_only("shared_locks")


def test_shared_holds_coexist_and_exclude_an_exclusive_one(
    ours: conch.Coordinator, theirs: conch.Coordinator, lock_name: str
) -> None:
    first, second = ours.lock(lock_name, shared=True), theirs.lock(lock_name, shared=True)
    assert first.acquire(blocking=False) and second.acquire(blocking=False)
    assert first.token is not None and second.token is not None
    assert first.token != second.token
    exclusive = theirs.lock(lock_name)
    assert exclusive.acquire(blocking=False) is False
    started = time.monotonic()
    assert exclusive.acquire(blocking=0.3) is False
    assert time.monotonic() - started >= 0.25
    first.release()
    second.release()
    assert exclusive.acquire(blocking=False)
    assert exclusive.token is not None and exclusive.token > max(first.token or 0, 0)
    exclusive.release()


def test_an_exclusive_hold_excludes_shared_ones_until_released(
    ours: conch.Coordinator, theirs: conch.Coordinator, lock_name: str
) -> None:
    exclusive = theirs.lock(lock_name)
    assert exclusive.acquire()
    shared = ours.lock(lock_name, shared=True)
    assert shared.acquire(blocking=False) is False
    waiter = Waiter(shared, blocking=10)
    time.sleep(0.2)
    exclusive.release()
    assert waiter.result(handoff_bound(ours.capabilities) + 2)
    shared.release()


def test_a_waiting_exclusive_hold_is_not_starved_by_new_shared_ones(
    ours: conch.Coordinator, theirs: conch.Coordinator, lock_name: str
) -> None:
    shared = ours.lock(lock_name, shared=True)
    assert shared.acquire()
    exclusive = theirs.lock(lock_name)
    waiter = Waiter(exclusive, blocking=20)
    time.sleep(0.5)  # the exclusive hold is queued
    late = ours.lock(lock_name, shared=True)
    assert late.acquire(blocking=False) is False, "a new shared hold overtook a waiting writer"
    shared.release()
    assert waiter.result(handoff_bound(theirs.capabilities) + 2)
    exclusive.release()
    assert late.acquire(blocking=5)
    late.release()


def test_a_shared_lock_has_the_contract_of_a_lock(
    sync_url: str, lock_name: str
) -> None:
    coordinator = conch.connect(sync_url)
    shared = coordinator.lock(lock_name, shared=True)
    with pytest.raises(conch.LockNotHeld):
        shared.release()
    with shared(blocking=1):
        assert shared.held
    assert_stop_ends(coordinator, shared)


@pytest.mark.timeout(180)
def test_a_killed_shared_holder_lets_a_writer_in(
    sync_url: str, theirs: conch.Coordinator, lock_name: str
) -> None:
    taken_after_the_holder_is_killed(sync_url, ["hold", lock_name, "shared"],
                                     theirs.lock(lock_name), theirs)


@pytest.mark.timeout(120)
def test_no_exclusive_section_overlaps_another_across_processes(
    sync_url: str, lock_name: str, tmp_path: pathlib.Path
) -> None:
    sections = sections_across_processes(sync_url, ["share", lock_name], 3, tmp_path)
    assert any(s.shared for s in sections) and any(not s.shared for s in sections)
    assert exclusion_violations(sections) == []


def test_a_long_timed_shared_wait_returns_false_on_time_then_the_lock_is_shared(
    ours: conch.Coordinator, theirs: conch.Coordinator, lock_name: str
) -> None:
    exclusive, shared = ours.lock(lock_name), theirs.lock(lock_name, shared=True)
    assert exclusive.acquire()
    started = time.monotonic()
    assert shared.acquire(blocking=2.5) is False
    assert 2.4 <= time.monotonic() - started < 6
    exclusive.release()
    assert shared.acquire(blocking=5)
    shared.release()


@pytest.mark.parametrize("name", ["", 42])
def test_a_hostile_name_gets_a_clear_error(ours: conch.Coordinator, name: object) -> None:
    with pytest.raises(conch.InvalidLockName):
        ours.lock(name, shared=True)  # type: ignore[arg-type]
    with pytest.raises(conch.InvalidLockName):
        ours.semaphore(name, 2)  # type: ignore[arg-type]
