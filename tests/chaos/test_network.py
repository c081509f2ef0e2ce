"""The connection between a client and its server cut, on the holder's side or a waiter's.

A proxy in the test process stands between one client and the server
(:mod:`tests.chaos.proxy`); the other clients connect directly.

* **holder side**: the holder's path is partitioned (nothing passes, nothing is
  closed) for longer than the lease. The holder must be told before anyone else
  gets the lock, its late write must be fenced out, and once the path heals its
  coordinator must lock again.
* **waiter side**: a waiter's connections are reset while it waits, and stay
  refused while the lock passes to another process. Once reconnected, it gets the
  lock after that holder, never with it, and it leaves no queue entry behind.
"""

from __future__ import annotations

import time

import pytest

from conch.history import load
from tests.chaos.driver import read_line
from tests.chaos.scenario import Scenario
from tests.chaos.targets import SERVER_BACKENDS
from tests.chaos.test_server_faults import RECOVERY, TOLD_MARGIN, next_acquired

TAKEOVER_MARGIN = 5.0
"""Seconds beyond the lease within which the server frees a cut-off holder's lock."""
SESSION_WAIT = 2.0
"""Seconds the waiter tries while a session-bound server still sees the holder's connection."""
WAITER_CUT = 1.5
"""Seconds a waiter stays cut off (within every lease: its session survives)."""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", SERVER_BACKENDS, indirect=True)
@pytest.mark.parametrize("kind", ["lock", "election"])
def test_a_holder_cut_off_from_its_server_is_told_before_anyone_else_holds(
    scenario: Scenario, kind: str,
) -> None:
    scenario.drive_leaders(kind)
    lease = scenario.target.lease or 0.0
    link = scenario.proxy()
    holder = scenario.worker("cut-off", url=scenario.target.url(via=link))
    first_token = int(holder.ask("acquire 10").removeprefix("acquired "))
    assert holder.ask("read") == "read 0"
    waiter = scenario.worker("waiter")
    waiter.send(f"acquire {RECOVERY}")
    time.sleep(0.3)

    link.partition()
    cut = time.monotonic()
    told = holder.ask(f"wait-lost {lease + TOLD_MARGIN}")
    assert told.startswith("lost "), "a holder cut off from its server was never told"
    told_at = float(told.split()[1])
    scenario.measure("holder told, cut off", told_at - cut)
    session_bound = scenario.target.lease is None
    answer = read_line(waiter.process, SESSION_WAIT if session_bound else lease + TAKEOVER_MARGIN)
    if not answer:  # the server still sees the holder's connection: it frees nothing
        scenario.note("lock while cut off", "kept by the server until the path healed")
        link.heal()
        answer = waiter.answer(RECOVERY)
    assert answer.startswith("acquired "), answer
    scenario.measure("next holder after the cut", time.monotonic() - cut)
    assert int(answer.split()[1]) > first_token
    assert waiter.ask("read") == "read 0"
    assert waiter.ask("write") == "accepted"
    assert holder.ask("write") == "rejected", "the cut-off holder's write got through"
    assert holder.ask("release") == "lost"
    assert waiter.ask("release") == "released"
    waiter_section = next(s for s in load(scenario.history) if s.holder == "waiter")
    assert told_at < waiter_section.enter, "the waiter held the lock before the holder knew"

    link.heal()
    assert holder.ask("acquire 15").startswith("acquired "), "no lock after the path healed"
    assert holder.ask("read") == "read 1"
    assert holder.ask("write") == "accepted"
    assert holder.ask("release") == "released"
    assert scenario.check() == 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", SERVER_BACKENDS, indirect=True)
def test_a_waiter_cut_off_while_waiting_gets_the_lock_after_the_next_holder_only(
    scenario: Scenario,
) -> None:
    link = scenario.proxy()
    holder = scenario.worker("holder")
    assert holder.ask("acquire 10").startswith("acquired ")
    waiter = scenario.worker("cut-off-waiter", url=scenario.target.url(via=link))
    waiter.send(f"acquire {RECOVERY}")
    time.sleep(0.5)

    link.refuse()
    link.cut()
    assert holder.ask("read") == "read 0"
    assert holder.ask("write") == "accepted"
    assert holder.ask("release") == "released"
    other = scenario.worker("other")  # takes the lock while the waiter is cut off
    assert other.ask("acquire 10").startswith("acquired "), "the waiter blocked the queue"
    assert other.ask("read") == "read 1"
    time.sleep(WAITER_CUT)
    link.restore()
    time.sleep(1.0)  # the waiter reconnects while "other" still holds
    assert other.ask("write") == "accepted"
    assert other.ask("release") == "released"
    released = time.monotonic()

    assert next_acquired([waiter], RECOVERY) is waiter
    scenario.measure("cut-off waiter got the lock after its release", time.monotonic() - released)
    assert waiter.ask("read") == "read 2"
    assert waiter.ask("write") == "accepted"
    assert waiter.ask("release") == "released"
    fresh = scenario.worker("fresh")  # nothing of the cut-off waiter is left queued
    assert fresh.ask("acquire 2").startswith("acquired "), "a queue entry was orphaned"
    assert fresh.ask("release") == "released"
    assert scenario.check() == 4
