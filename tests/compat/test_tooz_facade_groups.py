"""What conch's tooz facade does beyond tooz's transcripts (tests/compat/tooz_scenarios.py):
capabilities stored as JSON, results, watchers across failures and restarts, the partitioner
as Ceilometer and Gnocchi use it, the facade and conch's own API on one group, and a killed
member's leave delivered by run_watchers() on every backend with groups."""

from __future__ import annotations

import datetime
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest

import conch
from conch.compat.tooz import coordination, partitioner
from tests.compat.tooz_scenarios import run_watchers_until
from tests.conftest import BACKENDS
from tests.contract import workers
from tests.contract.test_group_watch import event_bound
from tests.contract.waiting import dead_holder_bound

Driver = coordination.CoordinationDriver


def started(url: str, member: bytes | str) -> Iterator[Driver]:
    coordinator = coordination.get_coordinator(url, member)
    coordinator.start()
    yield coordinator
    if coordinator.is_started:
        coordinator.stop()


@pytest.fixture
def agent(memory_url: str) -> Iterator[Driver]:
    yield from started(memory_url, b"agent-1")


@pytest.fixture
def other_agent(memory_url: str) -> Iterator[Driver]:
    yield from started(memory_url, b"agent-2")


@pytest.mark.parametrize("capabilities", [
    b"\x00\xff raw", {"nested": [b"\x01", {"deeper": b""}], "n": 1.5}, None, "text", [1, 2],
    {"$tooz_bytes": 1},
])
def test_capabilities_round_trip_with_bytes_anywhere(agent: Driver, capabilities: Any) -> None:
    agent.join_group_create(b"agents", capabilities)
    assert agent.get_member_capabilities(b"agents", b"agent-1").get() == capabilities


def test_tuples_come_back_as_lists_as_msgpack_gives_them(agent: Driver) -> None:
    agent.join_group_create(b"agents", {"pair": (1, b"x")})
    assert agent.get_member_capabilities(b"agents", b"agent-1").get() == {"pair": [1, b"x"]}


def test_bytes_are_stored_tagged_so_conch_members_see_json(agent: Driver) -> None:
    agent.join_group_create(b"agents", b"\x00\xff")
    assert agent.conch_coordinator.group(b"agents").members() == {
        "agent-1": {"$tooz_bytes": "AP8="}}


@pytest.mark.parametrize("capabilities", [{b"key": 1}, {1: "x"}, object(), float("nan"),
                                          "x" * 70_000])
def test_capabilities_conch_cannot_store_raise_serialization_error(
    agent: Driver, capabilities: Any
) -> None:
    agent.create_group(b"agents").get()
    with pytest.raises(coordination.SerializationError) as failure:
        agent.join_group(b"agents", capabilities).get()
    assert isinstance(failure.value, coordination.ToozError)
    assert isinstance(failure.value, conch.InvalidGroup)
    assert agent.get_members(b"agents").get() == set()


def test_calls_happen_at_once_and_errors_wait_for_get(agent: Driver) -> None:
    created = agent.create_group(b"agents")  # Designate never calls get()
    failed = agent.create_group(b"agents")
    assert created.done() and failed.done()
    assert agent.get_groups().get() == [b"agents"]
    with pytest.raises(coordination.GroupAlreadyExist):
        failed.get(timeout=1)
    assert created.get() is None


def test_a_result_still_pending_times_out_as_tooz() -> None:
    pending: futures.Future[None] = futures.Future()
    with pytest.raises(coordination.OperationTimedOut):
        coordination.CoordinatorResult(pending).get(timeout=0.01)


def test_group_calls_before_start_raise_at_once(memory_url: str) -> None:
    coordinator = coordination.get_coordinator(memory_url, b"agent-1")
    with pytest.raises(coordination.ToozError) as failure:
        coordinator.get_members(b"agents")
    assert isinstance(failure.value, conch.NotStarted)


def test_str_group_ids_and_member_ids_work_and_come_back_as_bytes(memory_url: str) -> None:
    for agent in started(memory_url, "agent-é"):
        agent.join_group_create("agents", {"weight": 1})
        assert agent.get_groups().get() == [b"agents"]
        assert agent.get_members("agents").get() == {"agent-é".encode()}
        assert agent.get_member_capabilities("agents", "agent-é").get() == {"weight": 1}


def test_member_info_has_tooz_fields_and_where_the_member_runs(agent: Driver) -> None:
    before = datetime.datetime.now()
    agent.join_group_create(b"agents", {"weight": 2})
    info = agent.get_member_info(b"agents", b"agent-1").get()
    assert info["capabilities"] == {"weight": 2}
    assert before <= info["created_at"] == info["updated_at"] <= datetime.datetime.now()
    assert info["pid"] == os.getpid() and info["host"]
    with pytest.raises(coordination.MemberNotJoined):
        agent.get_member_info(b"agents", b"agent-9").get()


def test_stop_leaves_every_group_and_watchers_see_it(agent: Driver, memory_url: str) -> None:
    agent.join_group_create(b"agents")
    left: list[bytes] = []
    agent.watch_leave_group(b"agents", lambda event: left.append(event.member_id))
    for other in started(memory_url, b"agent-2"):
        other.join_group_create(b"agents")
        other.join_group_create(b"others")
    assert agent.get_members(b"others").get() == set()
    run_watchers_until(agent, 1)
    assert left == [b"agent-2"]


def test_a_failing_callback_raises_from_run_watchers_and_its_event_comes_again(
    agent: Driver, other_agent: Driver
) -> None:
    agent.join_group_create(b"agents")
    calls: list[bytes] = []

    def flaky(event: coordination.MemberJoinedGroup) -> None:
        calls.append(event.member_id)
        if len(calls) == 1:
            raise RuntimeError("callback failed")

    agent.watch_join_group(b"agents", flaky)
    other_agent.join_group(b"agents").get()
    deadline = time.monotonic() + 10
    with pytest.raises(RuntimeError, match="callback failed"):
        while time.monotonic() < deadline:
            agent.run_watchers()
            time.sleep(0.01)
    assert agent.run_watchers() == [None]
    assert calls == [b"agent-2", b"agent-2"]
    assert agent.run_watchers() == []


def test_watchers_keep_working_after_the_coordinator_restarts(
    agent: Driver, other_agent: Driver
) -> None:
    agent.join_group_create(b"agents")
    agent.watch_join_group(b"agents", lambda event: event.member_id)
    agent.stop()
    agent.start()
    other_agent.join_group_create(b"agents")
    assert run_watchers_until(agent, 1) == [b"agent-2"]


def test_unwatching_the_last_callback_drops_the_queued_events(
    agent: Driver, other_agent: Driver
) -> None:
    agent.join_group_create(b"agents")
    agent.watch_join_group(b"agents", print)
    other_agent.join_group_create(b"agents")
    time.sleep(0.2)
    agent.unwatch_join_group(b"agents", print)
    agent.watch_join_group(b"agents", lambda event: event.member_id)
    other_agent.leave_group(b"agents").get()
    assert run_watchers_until(agent, 1, within=0.5) == []


def test_ceilometer_refreshes_when_the_ring_changes(agent: Driver, other_agent: Driver) -> None:
    # ceilometer/notification.py: run_watchers() on a timer, compare ring.nodes with a copy.
    hashring = agent.join_partitioned_group(b"ceilometer.notification")
    group_state = hashring.ring.nodes.copy()  # type: ignore[attr-defined]  # a mappingproxy
    assert group_state == {b"agent-1": 1}
    other_agent.join_partitioned_group(b"ceilometer.notification", weight=2)
    deadline = time.monotonic() + 10
    while hashring.ring.nodes == group_state and time.monotonic() < deadline:
        agent.run_watchers()
        time.sleep(0.01)
    assert hashring.ring.nodes == {b"agent-1": 1, b"agent-2": 2}


def test_gnocchi_joins_200_partitions_and_spreads_its_sacks(
    agent: Driver, other_agent: Driver
) -> None:
    # gnocchi/cli/metricd.py: join_partitioned_group(GROUP_ID, partitions=200), then each
    # worker takes the sacks members_for_object gives it.
    mine = agent.join_partitioned_group(b"gnocchi-processing", partitions=200)
    theirs = other_agent.join_partitioned_group(b"gnocchi-processing", partitions=200)
    run_watchers_until(agent, 1)
    sacks = range(128)
    taken = [sack for sack in sacks if mine.belongs_to_self(sack)]
    other = [sack for sack in sacks if theirs.belongs_to_self(sack)]
    assert sorted(taken + other) == list(sacks)
    assert 20 < len(taken) < 108
    other_agent.update_capabilities(b"gnocchi-processing", {"weight": 1, "processed": 3})
    assert agent.get_member_capabilities(b"gnocchi-processing", b"agent-2").get() == {
        "weight": 1, "processed": 3}
    agent.leave_partitioned_group(mine)
    assert agent.get_members(b"gnocchi-processing").get() == {b"agent-2"}


def test_a_partitioner_built_directly_follows_the_group(
    agent: Driver, other_agent: Driver
) -> None:
    other_agent.join_group_create(b"workers", {"weight": 4})
    direct = partitioner.Partitioner(agent, b"workers")
    assert direct.ring.nodes == {b"agent-2": 4}
    assert direct.belongs_to_member("task-1", b"agent-2")
    assert not direct.belongs_to_self("task-1")
    direct.stop()
    with pytest.raises(coordination.GroupNotCreated):
        partitioner.Partitioner(agent, b"no-such-group")


def test_facade_and_conch_members_share_a_group_and_agree_on_placement(
    agent: Driver, memory_url: str
) -> None:
    with conch.connect(memory_url, member_id="agent-3") as native:
        placed = native.partitioner("shared", partitions=32, weight=3)
        facade = agent.join_partitioned_group(b"shared", partitions=32)
        run_watchers_until(agent, 0)
        assert facade.ring.nodes == {b"agent-1": 1, b"agent-3": 3}
        deadline = time.monotonic() + 10
        while len(placed.ring.nodes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for task in (f"task-{n}" for n in range(100)):
            assert {member.encode() for member in placed.members_for(task)} == \
                facade.members_for_object(task)


@pytest.fixture(params=[name for name in BACKENDS if name != "memory"])
def server_url(request: pytest.FixtureRequest) -> str:
    """Each backend with groups that other processes share (a conch URL)."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    if not conch.Coordinator(url).capabilities.groups:
        pytest.skip(f"the {request.param} backend does not declare groups")
    return url


def test_a_killed_member_leaves_through_run_watchers(server_url: str) -> None:
    # tooz gives the leave once the member's heartbeat expires; conch within the backend's
    # session or lease bound, the same as the member's locks.
    group = f"killed-{uuid.uuid4().hex}"
    for watcher in started(server_url, b"watcher"):
        watcher.join_group_create(group.encode())
        watcher.watch_join_group(group.encode(), lambda event: event.member_id)
        watcher.watch_leave_group(group.encode(), lambda event: event.member_id)
        worker = workers.spawn(server_url, "join", group)
        try:
            worker_id = workers.expect(worker, "joined ")
            # Seen joining first: where watchers read every poll interval (mysql://) and
            # a death frees the entry at once, a member killed between two reads is never seen.
            assert run_watchers_until(watcher, 1, within=event_bound(
                watcher.conch_coordinator, group)) == [worker_id.encode()]
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            killed = time.monotonic()
            limit = dead_holder_bound(watcher.conch_coordinator) + event_bound(
                watcher.conch_coordinator, group)
            assert run_watchers_until(watcher, 1, within=limit) == [worker_id.encode()]
            took = time.monotonic() - killed
        finally:
            worker.kill()
            worker.communicate()
        print(f"{server_url.partition(':')[0]}: a killed member's MemberLeftGroup after "
              f"{took:.2f} s")
        assert watcher.get_members(group.encode()).get() == {b"watcher"}
