"""Groups in processes under eventlet monkey-patching, on every backend that has them: a
watcher is told of a join, a leave and a killed member while the process's other green
threads keep running (conch's group thread is a green thread there)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import conch
from tests.conftest import BACKENDS
from tests.contract.waiting import dead_holder_bound
from tests.eventlet.driving import GreenWorker
from tests.eventlet.ticker import LONGEST_GAP

EVENT_MARGIN = 5.0
"""Seconds an event may take beyond the backend's poll interval on a loaded machine."""


@pytest.fixture(params=BACKENDS)
def green_group_url(request: pytest.FixtureRequest) -> str:
    """Each backend that has groups, with the eventlet suite's short sessions."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    if request.param == "zookeeper":
        url += f"{'&' if '?' in url else '?'}timeout=4"
    if not conch.Coordinator(url).capabilities.groups:
        pytest.skip(f"the {request.param} backend does not declare groups")
    return url


@pytest.fixture
def workers(green_group_url: str) -> Iterator[list[GreenWorker]]:
    started: list[GreenWorker] = []
    yield started
    for worker in started:
        worker.close()


def start(url: str, started: list[GreenWorker]) -> GreenWorker:
    worker = GreenWorker(url)
    started.append(worker)
    worker.expect("ready")
    return worker


@pytest.mark.timeout(120)
def test_a_green_watcher_is_told_of_joins_and_deaths_without_stalling_the_hub(
    green_group_url: str, workers: list[GreenWorker]
) -> None:
    if green_group_url.startswith("memory:"):
        pytest.skip("memory:// groups live inside one process")
    group = f"green-{uuid.uuid4().hex}"
    watcher = start(green_group_url, workers)
    watcher.ask(f"watch {group}", "watching")
    with conch.connect(green_group_url) as probe:
        poll = probe.group(group).poll_interval
        bound = EVENT_MARGIN + (poll if poll < 30 else 0.0)
        dead_bound = dead_holder_bound(probe) + bound
    member = start(green_group_url, workers)
    member_id = member.ask(f"join {group}", "joined")[0]
    joined, left, gap = watcher.expect("event", timeout=bound)
    assert (joined, left) == (member_id, "-")
    member.kill()
    joined, left, gap = watcher.expect("event", timeout=dead_bound)
    assert (joined, left) == ("-", member_id)
    print(f"longest tick gap while watching: {float(gap):.3f} s")
    assert float(gap) < LONGEST_GAP, f"the hub stopped for {gap} s while watching"
