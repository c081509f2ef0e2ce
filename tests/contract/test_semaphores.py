"""Semaphores on every backend that declares ``semaphores``: at most ``limit`` holders at
any instant, a lock's contract per holder, a waiter woken by a release, one limit per name;
safe across processes."""

from __future__ import annotations

import pathlib
import time

import pytest

import conch
from conch.history_shared import permit_violations
from tests.contract.conftest import declared_only
from tests.contract.hold_checks import (
    assert_stop_ends,
    sections_across_processes,
    taken_after_the_holder_is_killed,
)
from tests.contract.waiting import Waiter, handoff_bound

_declared = declared_only("semaphores")


def test_at_most_limit_holders_and_a_release_lets_the_next_in(
    ours: conch.Coordinator, theirs: conch.Coordinator, lock_name: str
) -> None:
    first, second = ours.semaphore(lock_name, 2), theirs.semaphore(lock_name, 2)
    third = theirs.semaphore(lock_name, 2)
    assert first.acquire(blocking=False) and second.acquire(blocking=False)
    assert third.acquire(blocking=False) is False
    assert len({first.token, second.token}) == 2
    started = time.monotonic()
    assert third.acquire(blocking=0.3) is False
    assert time.monotonic() - started >= 0.25
    waiter = Waiter(third, blocking=10)
    time.sleep(0.2)
    first.release()
    assert waiter.result(handoff_bound(theirs.capabilities) + 2)
    assert third.token is not None and third.token > max(first.token or 0, second.token or 0)
    second.release()
    third.release()


def test_a_limit_that_disagrees_with_the_holders_is_an_error(
    ours: conch.Coordinator, theirs: conch.Coordinator, lock_name: str
) -> None:
    held = ours.semaphore(lock_name, 2)
    assert held.acquire()
    with pytest.raises(conch.LimitMismatch, match="limit 2"):
        theirs.semaphore(lock_name, 3).acquire(blocking=False)
    held.release()


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
def test_a_bad_limit_is_refused(ours: conch.Coordinator, limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        ours.semaphore("builds", limit)  # type: ignore[arg-type]


def test_a_semaphore_has_the_contract_of_a_lock(sync_url: str, lock_name: str) -> None:
    coordinator = conch.connect(sync_url)
    permit = coordinator.semaphore(lock_name, 1)
    with pytest.raises(conch.LockNotHeld):
        permit.release()
    with permit(blocking=1) as held:
        assert held is not None and permit.held
        with pytest.raises(conch.LockAcquireFailed), \
                coordinator.semaphore(lock_name, 1)(blocking=False):
            pass
    with permit:
        assert permit.held
    assert_stop_ends(coordinator, permit)


@pytest.mark.timeout(180)
def test_a_killed_holder_frees_its_permit(
    sync_url: str, ours: conch.Coordinator, lock_name: str
) -> None:
    permit = ours.semaphore(lock_name, 1)
    dead_token, token = taken_after_the_holder_is_killed(
        sync_url, ["hold", lock_name, "permit:1"], permit, ours)
    assert token is not None and token > dead_token


@pytest.mark.timeout(120)
def test_never_more_than_limit_holders_across_processes(
    sync_url: str, lock_name: str, tmp_path: pathlib.Path
) -> None:
    sections = sections_across_processes(sync_url, ["permit", lock_name, "2"], 4, tmp_path)
    assert permit_violations(sections, 2) == []
    assert permit_violations(sections, 1) != [], "the holds never overlapped: no test"


def test_a_long_timed_wait_returns_false_on_time_then_the_permit_is_taken(
    ours: conch.Coordinator, theirs: conch.Coordinator, lock_name: str
) -> None:
    held, waiting = ours.semaphore(lock_name, 1), theirs.semaphore(lock_name, 1)
    assert held.acquire()
    started = time.monotonic()
    assert waiting.acquire(blocking=2.5) is False  # longer than any backend's re-check
    assert 2.4 <= time.monotonic() - started < 6
    held.release()
    assert waiting.acquire(blocking=5)
    waiting.release()
