"""The partitioner on every backend: objects placed over the live members by weight, exactly
as tooz's partitioner places them, following joins and leaves."""

from __future__ import annotations

import time

import pytest
from tooz import hashring as tooz_hashring

import conch
from conch.partitioner import object_key
from tests.contract.test_group_watch import event_bound

OBJECTS = [f"metric-{index}" for index in range(200)]


pytestmark = pytest.mark.usefixtures("group_url")


def settle(partitioner: conch.Partitioner, members: set[str], within: float) -> None:
    """Wait until ``partitioner``'s ring has exactly ``members``."""
    deadline = time.monotonic() + within
    while set(partitioner.ring.nodes) != members:
        assert time.monotonic() < deadline, f"ring {set(partitioner.ring.nodes)} != {members}"
        time.sleep(0.02)


def test_members_agree_on_placement_and_it_is_toozs(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    first = ours.partitioner(group_name, partitions=50, weight=1)
    second = theirs.partitioner(group_name, partitions=50, weight=3)
    everyone = {ours.member_id, theirs.member_id}
    bound = event_bound(ours, group_name)
    settle(first, everyone, bound)
    settle(second, everyone, bound)
    reference = tooz_hashring.HashRing([], partitions=50)
    reference.add_node(ours.member_id, 1)
    reference.add_node(theirs.member_id, 3)
    for obj in OBJECTS:
        expected = reference.get_nodes(object_key(obj))
        assert first.members_for(obj) == second.members_for(obj) == expected
        assert first.owns(obj) == (ours.member_id in expected)
        assert second.owns(obj) != first.owns(obj)
    owned_by_second = sum(second.owns(obj) for obj in OBJECTS)
    assert owned_by_second > len(OBJECTS) / 2, "the member of weight 3 owns the most"


def test_replicas_and_ignored_members(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    first = ours.partitioner(group_name, replicas=2)
    theirs.partitioner(group_name)
    settle(first, {ours.member_id, theirs.member_id}, event_bound(ours, group_name))
    assert first.members_for("vnf-42") == {ours.member_id, theirs.member_id}
    assert first.owns("vnf-42")
    assert first.members_for("vnf-42", replicas=1, ignore=[ours.member_id]) == {
        theirs.member_id}


def test_the_ring_follows_a_member_leaving(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    first = ours.partitioner(group_name)
    second = theirs.partitioner(group_name)
    bound = event_bound(ours, group_name)
    settle(first, {ours.member_id, theirs.member_id}, bound)
    second.stop()
    settle(first, {ours.member_id}, bound)
    assert all(first.owns(obj) for obj in OBJECTS)
    assert theirs.member_id not in first.group.members()


def test_objects_with_a_tooz_hash_are_placed_by_it(
    ours: conch.Coordinator, group_name: str
) -> None:
    class Resource:
        def __tooz_hash__(self) -> bytes:
            return b"resource-7"

    partitioner = ours.partitioner(group_name, partitions=8)
    assert object_key(Resource()) == b"resource-7"
    assert partitioner.members_for(Resource()) == {ours.member_id}


def test_replicas_below_one_are_refused(ours: conch.Coordinator, group_name: str) -> None:
    with pytest.raises(ValueError, match="replicas"):
        ours.partitioner(group_name, replicas=0)
