"""Leader election on every backend: one leader at a time with an increasing fencing token,
the lock's blocking contract, leader changes pushed to watchers, a dead leader replaced."""

from __future__ import annotations

import pathlib
import queue
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

import conch
from conch.history import load, violations
from tests.contract import workers
from tests.contract.waiting import dead_holder_bound, handoff_bound

WATCH_INTERVAL = 0.2
EVENT_MARGIN = 3.0


@pytest.fixture
def election_name() -> str:
    return f"election-{uuid.uuid4().hex}"


@pytest.fixture
def candidate(sync_url: str) -> Iterator[conch.Coordinator]:
    with conch.connect(sync_url) as started:
        yield started


@pytest.fixture
def rival(sync_url: str) -> Iterator[conch.Coordinator]:
    with conch.connect(sync_url) as started:
        yield started


def test_one_leader_at_a_time_and_everyone_knows_who(
    candidate: conch.Coordinator, rival: conch.Coordinator, election_name: str
) -> None:
    ours, theirs = candidate.election(election_name), rival.election(election_name)
    assert ours.leader() is None
    assert ours.campaign(blocking=False)
    assert ours.is_leader and ours.token is not None and not ours.lost.is_set()
    assert theirs.campaign(blocking=False) is False
    assert not theirs.is_leader and theirs.token is None
    assert ours.leader() == theirs.leader() == candidate.member_id
    first_term = ours.token
    ours.resign()
    assert not ours.is_leader
    assert theirs.campaign(blocking=5)
    assert theirs.token is not None and theirs.token > first_term
    assert ours.leader() == rival.member_id
    theirs.resign()
    assert ours.leader() is None


def test_a_waiting_candidate_is_woken_when_the_leader_resigns(
    candidate: conch.Coordinator, rival: conch.Coordinator, election_name: str
) -> None:
    ours, theirs = candidate.election(election_name), rival.election(election_name)
    assert ours.campaign()
    won = threading.Event()

    def campaign() -> None:
        if theirs.campaign():
            won.set()

    waiting = threading.Thread(target=campaign)
    waiting.start()
    time.sleep(0.3)
    assert not won.is_set()
    ours.resign()
    resigned = time.monotonic()
    assert won.wait(handoff_bound(rival.capabilities) + 2)
    print(f"new leader {time.monotonic() - resigned:.3f} s after the resignation")
    waiting.join()
    theirs.resign()


def test_the_context_manager_campaigns_and_resigns(
    candidate: conch.Coordinator, rival: conch.Coordinator, election_name: str
) -> None:
    ours = candidate.election(election_name)
    with ours as leading:
        assert leading.is_leader
        with pytest.raises(conch.LockAcquireFailed, match="not won at once"), \
                rival.election(election_name)(blocking=False):
            pass
    assert not ours.is_leader
    with rival.election(election_name)(blocking=1) as theirs:
        assert theirs.leader() == rival.member_id


def test_resigning_without_leading_is_refused(
    candidate: conch.Coordinator, election_name: str
) -> None:
    with pytest.raises(conch.LockNotHeld):
        candidate.election(election_name).resign()


def test_watchers_are_told_of_each_new_term(
    candidate: conch.Coordinator, rival: conch.Coordinator, election_name: str
) -> None:
    changes: queue.Queue[conch.LeaderChange] = queue.Queue()
    rival.election(election_name, watch_interval=WATCH_INTERVAL).watch(changes.put)
    ours = candidate.election(election_name)
    assert ours.campaign()
    change = changes.get(timeout=WATCH_INTERVAL + EVENT_MARGIN)
    assert (change.leader, change.previous) == (candidate.member_id, None)
    ours.resign()
    change = changes.get(timeout=WATCH_INTERVAL + EVENT_MARGIN)
    assert (change.leader, change.previous) == (None, candidate.member_id)


@pytest.mark.parametrize("name", ["", 42, None])
def test_a_hostile_election_name_gets_a_clear_error(
    candidate: conch.Coordinator, name: object
) -> None:
    with pytest.raises(conch.InvalidLockName, match="election name"):
        candidate.election(name)  # type: ignore[arg-type]


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
    sync_url: str, candidate: conch.Coordinator, election_name: str
) -> None:
    if sync_url.startswith("memory:"):
        pytest.skip("memory:// elections live inside one process")
    leader = workers.spawn(sync_url, "lead", election_name)
    try:
        dead_token = int(workers.expect(leader, "leading "))
        ours = candidate.election(election_name)
        assert ours.campaign(blocking=False) is False
        leader.send_signal(signal.SIGKILL)
        leader.wait()
        killed = time.monotonic()
        bound = dead_holder_bound(candidate)
        assert ours.campaign(blocking=bound), f"no new leader {bound} s after the kill"
        took = time.monotonic() - killed
    finally:
        leader.kill()
        leader.communicate()
    print(f"new leader {took:.2f} s after the leader was killed")
    assert ours.token is not None and ours.token > dead_token
    ours.resign()


@pytest.mark.timeout(120)
def test_terms_never_overlap_and_tokens_increase_across_processes(
    sync_url: str, election_name: str, tmp_path: pathlib.Path
) -> None:
    if sync_url.startswith("memory:"):
        pytest.skip("memory:// elections live inside one process")
    history = tmp_path / "history"
    history.mkdir()
    candidates = [workers.spawn(sync_url, "elect", election_name, str(history), "3")
                  for _ in range(3)]
    try:
        for process in candidates:
            workers.expect(process, "ready")
        terms = sum(int(workers.finish(process).split()[-1]) for process in candidates)
    finally:
        for process in candidates:
            process.kill()
            process.communicate()
    sections = load(history)
    assert len(sections) == terms > 3
    assert violations(sections) == []
