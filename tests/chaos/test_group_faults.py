"""A group member frozen past its lease, or cut off from its server, is seen leaving by the
other members, and is told (``group.lost``) and re-joins once it can reach the server again.

Where the membership lives with the member's connection (file://, postgresql://, mysql://)
a member frozen for this test's 2.5 s keeps it: the server still sees its connection
(postgresql:// drops an entry whose session stayed silent for three times (heartbeat + connect
timeout), longer than that).
"""

from __future__ import annotations

import os
import queue
import signal
import time

import pytest

import conch
from tests.chaos.driver import Scripted
from tests.chaos.scenario import Scenario
from tests.chaos.targets import PROCESS_BACKENDS, SERVER_BACKENDS

MARGIN = 5.0
"""Seconds beyond the lease (and the backend's poll interval) allowed for a change."""
FROZEN_FOR = 2.5
"""Seconds a connection-bound member stays frozen while the others must still see it."""
RECOVERY = 20.0
"""Seconds a thawed or healed member may take to be told and to re-join."""


def watched(scenario: Scenario, group: str) -> tuple[conch.Group, queue.Queue[conch.GroupEvent]]:
    """The group as an observer in the test process sees it, and the events it is told."""
    observed = scenario.coordinator().group(group)
    events: queue.Queue[conch.GroupEvent] = queue.Queue()
    observed.watch(events.put)
    return observed, events


def next_event(events: queue.Queue[conch.GroupEvent], within: float) -> conch.GroupEvent:
    try:
        return events.get(timeout=within)
    except queue.Empty:
        raise AssertionError(f"no group event within {within} s") from None


def bound(scenario: Scenario, observed: conch.Group) -> float:
    poll = observed.poll_interval if observed.poll_interval < 30 else 0.0
    return (scenario.target.lease or 0.0) + poll + MARGIN


def joined_member(scenario: Scenario, holder: str, url: str | None = None
                  ) -> tuple[str, conch.Group, queue.Queue[conch.GroupEvent], Scripted]:
    """A worker that joined the scenario's group, and the group as an observer watches it
    (the join already seen)."""
    group = f"chaos-{scenario.lock_name}"
    observed, events = watched(scenario, group)
    member = scenario.worker(holder, url=url)
    assert member.ask(f"join-group {group}") == "joined"
    assert next_event(events, bound(scenario, observed)).joined == {holder}
    return group, observed, events, member


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", PROCESS_BACKENDS, indirect=True)
def test_a_member_frozen_past_its_lease_leaves_and_is_told_when_thawed(
    scenario: Scenario,
) -> None:
    group, observed, events, frozen = joined_member(scenario, "frozen")

    os.kill(frozen.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        if scenario.target.lease is None:
            time.sleep(FROZEN_FOR)
            assert events.empty(), "a frozen member whose connection lives was dropped"
            assert "frozen" in observed.members()
        else:
            assert next_event(events, bound(scenario, observed)).left == {"frozen"}
            scenario.measure("frozen member seen leaving", time.monotonic() - stopped)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    resumed = time.monotonic()
    if scenario.target.lease is None:
        assert frozen.ask("wait-group-lost " + group + " 1") == "group-not-lost"
        scenario.note("frozen member", "kept its membership (held with its connection)")
        return
    told = frozen.ask(f"wait-group-lost {group} {RECOVERY}")
    assert told.startswith("group-lost "), "the thawed member was never told"
    scenario.measure("thawed member told", float(told.split()[1]) - resumed)
    assert next_event(events, RECOVERY).joined == {"frozen"}, "the member did not re-join"
    scenario.measure("thawed member re-joined", time.monotonic() - resumed)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", SERVER_BACKENDS, indirect=True)
def test_a_member_cut_off_from_its_server_leaves_and_rejoins_once_healed(
    scenario: Scenario,
) -> None:
    link = scenario.proxy()
    group, observed, events, member = joined_member(scenario, "cut-off",
                                                    scenario.target.url(via=link))

    link.partition()
    cut = time.monotonic()
    told = member.ask(f"wait-group-lost {group} {bound(scenario, observed)}")
    left = None if scenario.target.lease is None else next_event(events, MARGIN)
    if scenario.target.lease is None and told == "group-not-lost":
        # The server still sees the member's connection (a partition closes nothing).
        scenario.note("member while cut off", "kept by the server until the path healed")
    else:
        assert told.startswith("group-lost "), "a member cut off was never told"
        scenario.measure("member told, cut off", float(told.split()[1]) - cut)
        if left is None:
            left = next_event(events, bound(scenario, observed))
        assert left.left == {"cut-off"}
    link.heal()
    healed = time.monotonic()
    if told.startswith("group-lost "):
        assert next_event(events, RECOVERY).joined == {"cut-off"}, "no re-join after healing"
        scenario.measure("member re-joined after healing", time.monotonic() - healed)
    assert "cut-off" in observed.members()
