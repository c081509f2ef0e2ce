"""Leader election on every backend: one leader at a time with an increasing fencing token,
the lock's blocking contract, leader changes pushed to watchers, a dead leader replaced."""

from __future__ import annotations

import pathlib
import queue
import signal
import threading
import time
import uuid

import pytest

import conch
from conch.history import violations
from tests.contract import workers
from tests.contract.hold_checks import sections_across_processes, skip_in_one_process
from tests.contract.waiting import dead_holder_bound, handoff_bound

WATCH_INTERVAL = 0.2
EVENT_MARGIN = 3.0


@pytest.fixture
def election_name() -> str:
    return f"election-{uuid.uuid4().hex}"


def test_one_leader_at_a_time_and_everyone_knows_who(
    ours: conch.Coordinator, theirs: conch.Coordinator, election_name: str
) -> None:
    our_election, their_election = ours.election(election_name), theirs.election(election_name)
    assert our_election.leader() is None
    assert our_election.campaign(blocking=False)
    assert our_election.is_leader and our_election.token is not None
    assert not our_election.lost.is_set()
    assert their_election.campaign(blocking=False) is False
    assert not their_election.is_leader and their_election.token is None
    assert our_election.leader() == their_election.leader() == ours.member_id
    first_term = our_election.token
    our_election.resign()
    assert not our_election.is_leader
    assert their_election.campaign(blocking=5)
    assert their_election.token is not None and their_election.token > first_term
    assert our_election.leader() == theirs.member_id
    their_election.resign()
    assert our_election.leader() is None


def test_a_waiting_candidate_is_woken_when_the_leader_resigns(
    ours: conch.Coordinator, theirs: conch.Coordinator, election_name: str
) -> None:
    our_election, their_election = ours.election(election_name), theirs.election(election_name)
    assert our_election.campaign()
    won = threading.Event()

    def campaign() -> None:
        if their_election.campaign():
            won.set()

    waiting = threading.Thread(target=campaign)
    waiting.start()
    time.sleep(0.3)
    assert not won.is_set()
    our_election.resign()
    resigned = time.monotonic()
    assert won.wait(handoff_bound(theirs.capabilities) + 2)
    print(f"new leader {time.monotonic() - resigned:.3f} s after the resignation")
    waiting.join()
    their_election.resign()


def test_the_context_manager_campaigns_and_resigns(
    ours: conch.Coordinator, theirs: conch.Coordinator, election_name: str
) -> None:
    our_election = ours.election(election_name)
    with our_election as leading:
        assert leading.is_leader
        with pytest.raises(conch.LockAcquireFailed, match="not won at once"), \
                theirs.election(election_name)(blocking=False):
            pass
    assert not our_election.is_leader
    with theirs.election(election_name)(blocking=1) as their_election:
        assert their_election.leader() == theirs.member_id


def test_resigning_without_leading_is_refused(
    ours: conch.Coordinator, election_name: str
) -> None:
    with pytest.raises(conch.LockNotHeld):
        ours.election(election_name).resign()


def test_watchers_are_told_of_each_new_term(
    ours: conch.Coordinator, theirs: conch.Coordinator, election_name: str
) -> None:
    changes: queue.Queue[conch.LeaderChange] = queue.Queue()
    theirs.election(election_name, watch_interval=WATCH_INTERVAL).watch(changes.put)
    our_election = ours.election(election_name)
    assert our_election.campaign()
    change = changes.get(timeout=WATCH_INTERVAL + EVENT_MARGIN)
    assert (change.leader, change.previous) == (ours.member_id, None)
    our_election.resign()
    change = changes.get(timeout=WATCH_INTERVAL + EVENT_MARGIN)
    assert (change.leader, change.previous) == (None, ours.member_id)


@pytest.mark.parametrize("name", ["", 42, None])
def test_a_hostile_election_name_gets_a_clear_error(
    ours: conch.Coordinator, name: object
) -> None:
    with pytest.raises(conch.InvalidLockName, match="election name"):
        ours.election(name)  # type: ignore[arg-type]


def test_a_stopped_candidate_cannot_campaign(sync_url: str, election_name: str) -> None:
    coordinator = conch.connect(sync_url)
    election = coordinator.election(election_name)
    assert election.campaign(blocking=False)
    coordinator.stop()
    assert election.lost.is_set()
    with pytest.raises(conch.NotStarted):
        election.campaign(blocking=False)


@pytest.mark.timeout(180)
def test_a_killed_leader_is_replaced_with_a_higher_token(
    sync_url: str, ours: conch.Coordinator, election_name: str
) -> None:
    skip_in_one_process(sync_url, "elections")
    leader = workers.spawn(sync_url, "lead", election_name)
    try:
        dead_token = int(workers.expect(leader, "leading "))
        our_election = ours.election(election_name)
        assert our_election.campaign(blocking=False) is False
        leader.send_signal(signal.SIGKILL)
        leader.wait()
        killed = time.monotonic()
        bound = dead_holder_bound(ours)
        assert our_election.campaign(blocking=bound), f"no new leader {bound} s after the kill"
        took = time.monotonic() - killed
    finally:
        leader.kill()
        leader.communicate()
    print(f"new leader {took:.2f} s after the leader was killed")
    assert our_election.token is not None and our_election.token > dead_token
    our_election.resign()


@pytest.mark.timeout(120)
def test_terms_never_overlap_and_tokens_increase_across_processes(
    sync_url: str, election_name: str, tmp_path: pathlib.Path
) -> None:
    sections = sections_across_processes(sync_url, ["elect", election_name], 3, tmp_path,
                                         "elections")
    assert violations(sections) == []
