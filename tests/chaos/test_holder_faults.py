"""A holder process that dies or freezes in the middle of its critical section.

* **killed** (SIGKILL, no clean-up runs): a waiter in another process gets the
  lock within the backend's bound (at once when the server ends the holder's
  session with its connection, after the lease otherwise); the time is measured.
* **frozen** (SIGSTOP) for longer than the lease, then resumed: where the lease
  runs out the waiter takes over, and the holder, once thawed, must be told it
  lost the lock (at the latest by the release it makes at once: a release that
  passes in silence is a loss unreported) and its late write must be refused by
  the fencing check. Where
  the lock lives as long as the holder's connection (file://, postgresql://),
  the frozen holder keeps it and the waiter must not get it.

Either way the recorded history and the fenced counter must show no violation.
Each runs with a lock, with an election (its leader killed or frozen: a new leader with a
higher token, the old one told) and with a semaphore's permit (limit 1).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.chaos.scenario import Background, Scenario
from tests.chaos.targets import PROCESS_BACKENDS
from tests.chaos.worker import Holder

SESSION_END = 6.0
"""Seconds within which a dead holder's session-bound locks must be free."""
MARGIN = 5.0
"""Seconds beyond the lease allowed for the lock to pass on (loaded test machines)."""
FROZEN_FOR = 2.5
"""Seconds a waiter tries while a holder whose lock lives with its connection is frozen."""


def freed_within(lease: float | None) -> float:
    """Seconds within which a holder that stopped renewing loses its lock to a waiter."""
    return SESSION_END if lease is None else lease + MARGIN


def take_and_update(holder: Holder, blocking: float) -> int | None:
    """Acquire, then update the counter (read, write); the token, or None if not taken."""
    token = holder.acquire(blocking)
    if token is not None:
        holder.read()
        holder.write()
    return token


@pytest.mark.timeout(90)
@pytest.mark.parametrize("target", PROCESS_BACKENDS, indirect=True)
@pytest.mark.parametrize("kind", ["lock", "election", "permit"])
def test_a_holder_killed_mid_section_is_replaced_and_no_update_is_lost(
    scenario: Scenario, kind: str,
) -> None:
    scenario.drive_leaders(kind)
    doomed = scenario.worker("doomed")
    dead_token = int(doomed.ask("acquire 10").removeprefix("acquired "))
    assert doomed.ask("read") == "read 0"
    waiter = scenario.holder("waiter")
    bound = freed_within(scenario.target.lease)
    waiting = Background(lambda: take_and_update(waiter, bound + 5))
    time.sleep(0.3)
    assert waiting.running, "the waiter got a lock that was held"

    os.kill(doomed.pid, signal.SIGKILL)
    killed = time.monotonic()
    token = waiting.result(bound + 10)
    assert token is not None, f"still held {bound + 5} s after its holder died"
    took = waiting.returned_at - killed
    assert token > dead_token
    assert not waiter.release()
    scenario.measure("taken over after SIGKILL", took)
    assert took < bound
    assert scenario.check() == 1
    assert scenario.store.value(scenario.lock_name) == 1


@pytest.mark.timeout(90)
@pytest.mark.parametrize("target", PROCESS_BACKENDS, indirect=True)
@pytest.mark.parametrize("kind", ["lock", "election", "permit"])
def test_a_holder_frozen_past_its_lease_is_told_and_fenced_out_or_keeps_the_lock(
    scenario: Scenario, kind: str,
) -> None:
    scenario.drive_leaders(kind)
    lease = scenario.target.lease
    frozen = scenario.worker("frozen")
    first_token = int(frozen.ask("acquire 10").removeprefix("acquired "))
    assert frozen.ask("read") == "read 0"
    waiter = scenario.holder("waiter")

    os.kill(frozen.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        if lease is None:
            # The lock lives with the holder's connection, which a frozen process keeps.
            assert waiter.acquire(FROZEN_FOR) is None, "a frozen holder lost it"
        else:
            token = waiter.acquire(lease + MARGIN)
            taken_after = time.monotonic() - stopped
            assert token is not None, f"the waiter waited {lease + MARGIN} s in vain"
            assert token > first_token
            assert taken_after > lease / 2, "taken before the lease could have run out"
            assert waiter.read() == 0
            waiter.write()
        # Queued while frozen: the holder's first acts once thawed, before its session
        # may have noticed anything. Neither may pass in silence.
        frozen.send("write")
        frozen.send("release")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    resumed = time.monotonic()
    wrote, released = frozen.answer(), frozen.answer()

    if lease is None:
        assert (wrote, released) == ("accepted", "released")
        assert take_and_update(waiter, 5) is not None
        assert not waiter.release()
        scenario.note("frozen holder", "kept the lock (held with its connection)")
    else:
        assert wrote == "rejected", "the late write got past the fencing check"
        assert released == "lost", "the thawed holder was never told"
        told_after = time.monotonic() - resumed
        assert not waiter.release()
        scenario.measure("taken over after SIGSTOP", taken_after)
        scenario.measure("thawed holder told of the loss", told_after)
    assert scenario.check() == 2
    assert scenario.store.value(scenario.lock_name) == (2 if lease is None else 1)
