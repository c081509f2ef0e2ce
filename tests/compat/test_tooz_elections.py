"""tooz's leader election: one scenario run on the real tooz (on the servers where its drivers
elect: redis, memcached, zookeeper) and on conch's facade (every backend), whose transcripts
must be tooz's; then what tooz cannot show — a killed or stopped leader replaced, in
``run_watchers()``, by a member with a higher fencing token, and a lost term won again."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import conch
from conch.compat.tooz import coordination
from tests.compat import tooz_scenarios
from tests.compat.tooz_scenarios import Members, Transcript, outcome
from tests.contract import workers
from tests.contract.waiting import dead_holder_bound

tooz_coordination = pytest.importorskip("tooz.coordination")

Driver = coordination.CoordinationDriver


def electing(members: Members) -> Transcript:
    """Both members watch one group's election; a wins, stands down, b takes over, b stops
    watching and stands down, a wins again."""
    a, b, group = members.a, members.b, members.group
    seen: list[tuple[str, object, object]] = []

    def elected(watcher: str) -> Callable[[Any], str]:
        def callback(event: Any) -> str:
            seen.append((watcher, event.group_id, members.label(event.member_id)))
            return "elected callback"
        return callback

    on_a, on_b = elected("a"), elected("b")
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("leader before anyone campaigns", lambda: a.get_leader(group).get()),
        ("a watches", lambda: a.watch_elected_as_leader(group, on_a)),
        ("b watches", lambda: b.watch_elected_as_leader(group, on_b)),
        ("a runs watchers", a.run_watchers),
        ("b runs watchers", b.run_watchers),
        ("a runs watchers again", a.run_watchers),
        ("leader", lambda: b.get_leader(group).get()),
        ("b stands down without leading", lambda: b.stand_down_group_leader(group)),
        ("a stands down", lambda: a.stand_down_group_leader(group)),
        ("b runs watchers after a stood down", b.run_watchers),
        ("leader after a stood down", lambda: a.get_leader(group).get()),
        ("a runs watchers while b leads", a.run_watchers),
        ("b unwatches", lambda: b.unwatch_elected_as_leader(group, on_b)),
        ("b unwatches again", lambda: b.unwatch_elected_as_leader(group, on_b)),
        ("b stands down", lambda: b.stand_down_group_leader(group)),
        ("a runs watchers once b stood down", a.run_watchers),
        ("leader at the end", lambda: b.get_leader(group).get()),
        ("a stands down at the end", lambda: a.stand_down_group_leader(group)),
    ]
    transcript = [(label, members.label(outcome(call))) for label, call in steps]
    return [*transcript, ("events", seen)]


def electing_expected(group: bytes) -> Transcript:
    """What tooz 9.1's zookeeper driver gives for :func:`electing` (but where
    :data:`TOOZ_DRIVERS_DIFFER` says), and conch on every backend."""
    return [
        ("leader before anyone campaigns", None),
        ("a watches", None),
        ("b watches", None),
        ("a runs watchers", []),
        ("b runs watchers", []),
        ("a runs watchers again", []),
        ("leader", "a"),
        ("b stands down without leading", False),
        ("a stands down", True),
        ("b runs watchers after a stood down", []),
        ("leader after a stood down", "b"),
        ("a runs watchers while b leads", []),
        ("b unwatches", None),
        ("b unwatches again", "WatchCallbackNotFound"),
        ("b stands down", True),
        ("a runs watchers once b stood down", []),
        ("leader at the end", "a"),
        ("a stands down at the end", True),
        ("events", [("a", group, "a"), ("b", group, "b"), ("a", group, "a")]),
    ]


_CANNOT_STAND_DOWN = {step: "NotImplemented" for step in (
    "b stands down without leading", "a stands down", "b stands down",
    "a stands down at the end")}

TOOZ_DRIVERS_DIFFER: dict[str, Callable[[bytes], dict[str, object]]] = {
    # Standing down releases the member's leader lock, held or not, and says True.
    "kazoo": lambda group: {"b stands down without leading": True},
    # No stand_down_group_leader: a stays the leader, nobody else is ever elected.
    "memcached": lambda group: {
        **_CANNOT_STAND_DOWN, "leader after a stood down": "a",
        "events": [("a", group, "a")]},
    # Neither stand_down_group_leader nor get_leader.
    "redis": lambda group: {
        **_CANNOT_STAND_DOWN, "events": [("a", group, "a")],
        **{step: "NotImplemented" for step in (
            "leader before anyone campaigns", "leader", "leader after a stood down",
            "leader at the end")}},
}


def check(get_coordinator: Callable[[str, bytes], Any], url: str,
          differences: Callable[[bytes], dict[str, object]] = lambda group: {}) -> None:
    for members in tooz_scenarios.started(get_coordinator, url):
        changed = differences(members.group)
        wanted = [(step, changed.get(step, answer))
                  for step, answer in electing_expected(members.group)]
        assert electing(members) == wanted


@pytest.mark.parametrize("real_tooz_url", ["memcached", "redis", "zookeeper"], indirect=True)
def test_the_real_tooz_gives_the_expected_transcript(real_tooz_url: str) -> None:
    check(tooz_coordination.get_coordinator, real_tooz_url,
          TOOZ_DRIVERS_DIFFER[real_tooz_url.partition(":")[0]])


def test_conch_gives_tooz_transcript_on_every_backend(tooz_url: str) -> None:
    check(coordination.get_coordinator, tooz_url)


@pytest.fixture
def group() -> bytes:
    return b"scheduler-" + uuid.uuid4().hex.encode()


def run_watchers_until_elected(coordinator: Driver, elected: list[Any], within: float) -> None:
    deadline = time.monotonic() + within
    while not elected and time.monotonic() < deadline:
        coordinator.run_watchers()
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_a_killed_leader_is_replaced_in_run_watchers_with_a_higher_token(
    tooz_url: str, group: bytes
) -> None:
    if tooz_url.startswith("memory:"):
        pytest.skip("memory:// elections live inside one process")
    leader = workers.spawn(tooz_url, group.decode(), module="tests.compat.tooz_leader")
    survivor = coordination.get_coordinator(tooz_url, b"survivor")
    survivor.start()
    elected: list[coordination.LeaderElected] = []
    try:
        dead_token = int(workers.expect(leader, "leading "))
        survivor.watch_elected_as_leader(group, elected.append)
        assert survivor.run_watchers() == []
        assert not elected
        assert survivor.get_leader(group).get() == b"doomed-leader"
        leader.send_signal(signal.SIGKILL)
        leader.wait()
        killed = time.monotonic()
        bound = dead_holder_bound(survivor.conch_coordinator)
        run_watchers_until_elected(survivor, elected, bound)
        took = time.monotonic() - killed
        assert elected, f"no new leader {bound} s after the kill"
        print(f"new leader {took:.2f} s after the leader was killed")
        election = elected[0].conch_election
        assert elected[0].member_id == b"survivor" and elected[0].group_id == group
        assert election is not None and election.is_leader
        assert election.token is not None and election.token > dead_token
        assert survivor.get_leader(group).get() == b"survivor"
        assert survivor.stand_down_group_leader(group) is True
    finally:
        leader.kill()
        leader.communicate()
        survivor.stop()


def test_a_stopped_leaders_term_ends_and_another_member_wins(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, group: bytes
) -> None:
    first: list[coordination.LeaderElected] = []
    second: list[coordination.LeaderElected] = []
    tooz_coordinator.watch_elected_as_leader(group, first.append)
    other_tooz_coordinator.watch_elected_as_leader(group, second.append)
    tooz_coordinator.run_watchers()
    other_tooz_coordinator.run_watchers()
    assert len(first) == 1 and not second
    old = first[0].conch_election
    assert old is not None and old.token is not None
    old_token = old.token
    tooz_coordinator.stop()
    run_watchers_until_elected(other_tooz_coordinator, second, 10)
    assert [event.member_id for event in second] == [b"conductor-2"]
    new = second[0].conch_election
    assert new is not None and old.lost.is_set()
    assert new.token is not None and new.token > old_token
    tooz_coordinator.start()  # a restarted member campaigns again, in a new term
    assert tooz_coordinator.stand_down_group_leader(group) is False
    assert other_tooz_coordinator.stand_down_group_leader(group) is True
    tooz_coordinator.run_watchers()
    assert len(first) == 2 and first[1].conch_election is not old
    assert tooz_coordinator.get_leader(group).get() == b"conductor-1"


def test_a_lost_term_is_reported_and_won_again(
    tooz_coordinator: Driver, other_tooz_coordinator: Driver, group: bytes
) -> None:
    if not tooz_coordinator.conch_coordinator.capabilities.breakable:
        pytest.skip("only the leader's own process can end its term on this backend")
    elected: list[coordination.LeaderElected] = []
    tooz_coordinator.watch_elected_as_leader(group, elected.append)
    tooz_coordinator.run_watchers()
    election = elected[0].conch_election
    assert election is not None and election.token is not None
    lost_token = election.token
    other_tooz_coordinator.conch_coordinator.break_lock(b"conch-election:" + group)
    assert election.lost.wait(dead_holder_bound(tooz_coordinator.conch_coordinator)), (
        "the leader was not told that its term ended")
    assert tooz_coordinator.stand_down_group_leader(group) is False  # the term was lost
    tooz_coordinator.run_watchers()
    assert len(elected) == 2 and election.is_leader
    assert election.token is not None and election.token > lost_token


def test_the_election_is_conchs_election_of_the_group_name(
    tooz_coordinator: Driver, group: bytes
) -> None:
    native = tooz_coordinator.conch_coordinator.election(group)
    assert native.campaign(blocking=False)
    elected: list[coordination.LeaderElected] = []
    tooz_coordinator.watch_elected_as_leader(group, elected.append)
    tooz_coordinator.run_watchers()
    assert not elected  # conch's own candidate leads the same election
    assert tooz_coordinator.get_leader(group).get() == b"conductor-1"
    native.resign()
    tooz_coordinator.run_watchers()
    assert len(elected) == 1
    assert isinstance(elected[0].conch_election, conch.Election)
