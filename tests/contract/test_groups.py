"""Group membership on every backend: join, members, capabilities, leave, create/delete."""

from __future__ import annotations

import pytest

import conch

pytestmark = pytest.mark.usefixtures("group_url")


def test_a_member_joins_with_capabilities_that_every_member_reads(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    ours.group(group_name).join({"weight": 2, "zone": "é"})
    theirs.group(group_name).join()
    expected = {ours.member_id: {"weight": 2, "zone": "é"}, theirs.member_id: None}
    assert ours.group(group_name).members() == expected
    assert theirs.group(group_name).members() == expected


def test_joining_again_replaces_the_capabilities(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    group = ours.group(group_name)
    group.join({"weight": 1})
    group.join([1, "two", None])
    assert theirs.group(group_name).members() == {ours.member_id: [1, "two", None]}


def test_member_info_names_host_and_pid(ours: conch.Coordinator, group_name: str) -> None:
    import os

    from conch.introspection import HOST

    group = ours.group(group_name)
    group.join({"weight": 3})
    info = group.member_info()[ours.member_id]
    assert (info.member_id, info.capabilities, info.host, info.pid) == (
        ours.member_id, {"weight": 3}, HOST, os.getpid())
    assert info.joined_at is not None


def test_a_member_that_leaves_is_gone_and_leaving_twice_is_harmless(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    group = ours.group(group_name)
    group.join()
    theirs.group(group_name).join()
    group.leave()
    group.leave()
    assert not group.joined
    assert set(theirs.group(group_name).members()) == {theirs.member_id}


def test_a_stopped_coordinator_leaves_its_groups(
    group_url: str, ours: conch.Coordinator, group_name: str
) -> None:
    with conch.connect(group_url) as leaving:
        leaving.group(group_name).join()
        assert leaving.member_id in ours.group(group_name).members()
    assert leaving.member_id not in ours.group(group_name).members()


def test_one_group_object_per_name_and_groups_lists_them(
    ours: conch.Coordinator, group_name: str
) -> None:
    assert ours.group(group_name) is ours.group(group_name)
    assert ours.group(group_name) is ours.group(group_name.encode())
    ours.group(group_name).join()
    assert group_name in ours.groups()


def test_create_and_delete_a_group(
    ours: conch.Coordinator, theirs: conch.Coordinator, group_name: str
) -> None:
    group = ours.group(group_name)
    assert not group.exists()
    assert group.members() == {}
    assert group.create() is True
    assert group.create() is False
    assert theirs.group(group_name).exists()
    assert group_name in theirs.groups()
    theirs.group(group_name).join()
    with pytest.raises(conch.GroupNotEmpty):
        group.delete()
    theirs.group(group_name).leave()
    group.delete()
    assert not group.exists()
    assert group_name not in ours.groups()
    with pytest.raises(conch.GroupNotFound):
        group.delete()


@pytest.mark.parametrize("name, message", [
    ("", "must not be empty"),
    ("a\0b", "NUL"),
    ("x" * 257, "at most 256 bytes"),
    (42, "must be str or bytes"),
])
def test_a_hostile_group_name_gets_a_clear_error(
    ours: conch.Coordinator, name: object, message: str
) -> None:
    with pytest.raises(conch.InvalidGroup, match=message):
        ours.group(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("capabilities, message", [
    (object(), "must be a JSON value"),
    (float("nan"), "must be a JSON value"),
    ({"blob": "x" * 70_000}, "at most 65536 bytes"),
])
def test_capabilities_that_are_not_json_or_too_large_get_a_clear_error(
    ours: conch.Coordinator, group_name: str, capabilities: object, message: str
) -> None:
    group = ours.group(group_name)
    with pytest.raises(conch.InvalidGroup, match=message):
        group.join(capabilities)
    assert not group.joined


def test_names_and_capabilities_with_unusual_characters_round_trip(
    ours: conch.Coordinator, theirs: conch.Coordinator
) -> None:
    name = "grp/../\\ *?é\u2603 %s\n\t"
    capabilities = {"text": "NUL \0 inside", "list": [1.5, True, {"deep": "☃"}]}
    ours.group(name).join(capabilities)
    assert theirs.group(name).members() == {ours.member_id: capabilities}
    ours.group(name).leave()


def test_groups_need_a_started_coordinator(group_url: str, group_name: str) -> None:
    coordinator = conch.Coordinator(group_url)
    with pytest.raises(conch.NotStarted):
        coordinator.group(group_name)


def test_joining_again_keeps_the_join_time_and_leave_says_whether_it_was_in(
    ours: conch.Coordinator, group_name: str
) -> None:
    group = ours.group(group_name)
    group.join({"weight": 1})
    first = group.member_info()[ours.member_id]
    group.join({"weight": 2})
    again = group.member_info()[ours.member_id]
    assert again.joined_at == first.joined_at
    assert again.updated_at is not None and first.updated_at is not None
    assert again.updated_at >= first.updated_at
    assert group.leave() is True
    assert group.leave() is False
