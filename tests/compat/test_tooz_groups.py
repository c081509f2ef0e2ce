"""tooz's group, watcher and partitioner API: the same scenarios run on the real tooz (on the
servers where it has groups) and on conch's facade (memory:// and every backend with
groups), and each must give the transcript tooz 9.1 gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conch.compat.tooz import coordination
from tests.compat import tooz_scenarios
from tests.compat.tooz_scenarios import Members, Transcript

tooz_coordination = pytest.importorskip("tooz.coordination")
tooz_hashring = pytest.importorskip("tooz.hashring")
tooz_partitioner = pytest.importorskip("tooz.partitioner")


def partitioning_expected(group: bytes) -> Transcript:
    """What :func:`tooz_scenarios.partitioning` must give: placements of tooz's own ring."""
    ring = tooz_hashring.HashRing([], partitions=16)
    ring.add_node(b"agent-a", 1)
    ring.add_node(b"agent-b", 3)
    place = tooz_partitioner.Partitioner._hash_object
    placements = [sorted({b"agent-a": "a", b"agent-b": "b"}[node]
                         for node in ring.get_nodes(place(obj)))
                  for obj in tooz_scenarios.OBJECTS]
    return [
        ("ring", {"a": 1, "b": 3}),
        ("placements agree", True),
        ("a's share", sum(owners == ["a"] for owners in placements)),
        ("b's share", sum(owners == ["b"] for owners in placements)),
        ("two replicas", True),
        ("placements", placements),
        ("after a left", {"b": 3}),
        ("b owns all", True),
    ]


SCENARIOS: dict[str, tuple[Callable[[Members], Transcript], Callable[[bytes], Transcript]]] = {
    "membership": (tooz_scenarios.membership, lambda group: tooz_scenarios.MEMBERSHIP),
    "watching": (tooz_scenarios.watching, tooz_scenarios.watching_expected),
    "partitioning": (tooz_scenarios.partitioning, partitioning_expected),
}
"""Each scenario and the transcript tooz 9.1 gives for it (from the scenario's group)."""


def check(scenario: str, get_coordinator: Callable[[str, bytes], Any], url: str,
          differences: dict[str, object] | None = None) -> None:
    """Run ``scenario`` on ``url``; its transcript must be tooz's, but for ``differences``."""
    run, expected = SCENARIOS[scenario]
    for members in tooz_scenarios.started(get_coordinator, url):
        wanted = [(step, (differences or {}).get(step, answer))
                  for step, answer in expected(members.group)]
        assert run(members) == wanted


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_real_tooz_gives_the_expected_transcripts(scenario: str, real_tooz_url: str) -> None:
    scheme = real_tooz_url.partition(":")[0]
    check(scenario, tooz_coordination.get_coordinator, real_tooz_url,
          tooz_scenarios.TOOZ_DRIVERS_DIFFER.get(scheme))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conch_gives_tooz_transcripts_on_memory(scenario: str, memory_url: str) -> None:
    check(scenario, coordination.get_coordinator, memory_url)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conch_gives_tooz_transcripts_on_every_backend_with_groups(
    scenario: str, group_url: str
) -> None:
    check(scenario, coordination.get_coordinator, group_url)
