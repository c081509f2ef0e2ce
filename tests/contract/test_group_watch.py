"""Watching a group: conch pushes who joined and who left, in order, from its own thread;
a killed member's entry goes within the backend's session or lease bound."""

from __future__ import annotations

import queue
import signal
import threading
import time

import pytest

import conch
from tests.contract import workers
from tests.contract.waiting import dead_holder_bound

EVENT_MARGIN = 3.0
"""Seconds an event may take beyond the backend's poll interval on a loaded machine."""

pytestmark = pytest.mark.usefixtures("group_url")


class Events:
    """A watcher that queues what it is told."""

    def __init__(self) -> None:
        self.queue: queue.Queue[conch.GroupEvent] = queue.Queue()

    def __call__(self, event: conch.GroupEvent) -> None:
        self.queue.put(event)

    def next(self, within: float) -> conch.GroupEvent:
        try:
            return self.queue.get(timeout=within)
        except queue.Empty:
            raise AssertionError(f"no group event within {within} s") from None

    def none_within(self, seconds: float) -> None:
        time.sleep(seconds)
        assert self.queue.empty(), self.queue.get()


def event_bound(coordinator: conch.Coordinator, group_name: str) -> float:
    """Seconds within which a change reaches a watcher on this backend: a margin, plus the
    poll interval where changes are not pushed (a pushing backend's is long)."""
    poll_interval = coordinator.group(group_name).poll_interval
    return EVENT_MARGIN + (poll_interval if poll_interval < 30 else 0.0)


def test_a_watcher_is_told_who_joins_and_who_leaves_in_order(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    events = Events()
    group = ours.group(group_name)
    group.join()
    group.watch(events)
    bound = event_bound(ours, group_name)
    theirs.group(group_name).join({"weight": 5})
    joined = events.next(bound)
    assert (joined.joined, joined.left) == (frozenset({theirs.member_id}), frozenset())
    assert joined.members == {ours.member_id: None, theirs.member_id: {"weight": 5}}
    assert joined.group == group_name
    theirs.group(group_name).leave()
    left = events.next(bound)
    assert (left.joined, left.left) == (frozenset(), frozenset({theirs.member_id}))


def test_a_cancelled_watcher_is_not_called_again(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    events, still_watching = Events(), Events()
    group = ours.group(group_name)
    group.join()
    subscription = group.watch(events)
    group.watch(still_watching)
    subscription.cancel()
    subscription.cancel()
    theirs.group(group_name).join()
    still_watching.next(event_bound(ours, group_name))
    assert events.queue.empty()


def test_a_failing_watcher_does_not_stop_the_others_or_later_events(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    def fail(event: conch.GroupEvent) -> None:
        raise RuntimeError("a watcher's bug")

    events = Events()
    group = ours.group(group_name)
    group.watch(fail)
    group.watch(events)
    bound = event_bound(ours, group_name)
    theirs.group(group_name).join()
    assert events.next(bound).joined == {theirs.member_id}
    theirs.group(group_name).leave()
    assert events.next(bound).left == {theirs.member_id}


def test_a_slow_watcher_does_not_stall_another_group(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    release = threading.Event()
    ours.group(group_name).watch(lambda event: release.wait(30))
    events = Events()
    ours.group(group_name + "-other").watch(events)
    theirs.group(group_name).join()
    time.sleep(0.2)
    theirs.group(group_name + "-other").join()
    try:
        assert events.next(event_bound(ours, group_name)).joined == {theirs.member_id}
    finally:
        release.set()


def test_a_stopping_member_is_seen_leaving(
    group_url: str, ours: conch.Coordinator, group_name: str
) -> None:
    events = Events()
    ours.group(group_name).watch(events)
    bound = event_bound(ours, group_name)
    with conch.connect(group_url) as leaving:
        leaving.group(group_name).join()
        assert events.next(bound).joined == {leaving.member_id}
    assert events.next(bound).left == {leaving.member_id}


@pytest.mark.timeout(180)
def test_a_killed_member_is_seen_leaving_within_the_session_bound(
    group_url: str, ours: conch.Coordinator, group_name: str
) -> None:
    backend = group_url.split("://", 1)[0]
    if backend == "memory":
        pytest.skip("memory:// members live inside one process")
    events = Events()
    ours.group(group_name).watch(events)
    worker = workers.spawn(group_url, "join", group_name)
    try:
        worker_id = workers.expect(worker, "joined ")
        bound = event_bound(ours, group_name)
        assert events.next(bound).joined == {worker_id}
        killed = time.monotonic()
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        limit = dead_holder_bound(ours) + bound
        assert events.next(limit).left == {worker_id}
        took = time.monotonic() - killed
    finally:
        worker.kill()
        worker.communicate()
    print(f"{backend}: a killed member left after {took:.2f} s")
    assert worker_id not in ours.group(group_name).members()
