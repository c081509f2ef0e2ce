"""zookeeper:// groups beyond the contract suite: the znodes and their ACL, member ids that
are not znode names, the entry lost behind the member's back (deleted, session expired) and
re-joined, a restart, a group deleted and created again, TLS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import NoAuthError  # type: ignore[import-untyped]

import conch
from conch.backends.kit.naming import readable_key
from conch.backends.zookeeper.groups import member_node
from conch.url import parse_url
from tests.backends.test_zookeeper import CREDENTIALS, session_of
from tests.contract.test_group_watch import Events
from tests.servers.base import wait_until
from tests.servers.zookeeper import ZooKeeperServer, start_zookeeper

PUSHED_WITHIN = 3.0
"""Seconds within which a watcher hears of a change a children watch pushed."""


@pytest.fixture
def group_name() -> str:
    """A group name no other test uses."""
    return f"group-{uuid.uuid4().hex}"


@pytest.fixture
def server() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper of this test alone, which it may restart or wipe."""
    started = start_zookeeper()
    try:
        yield started
    finally:
        started.cleanup()


def group_path(url: str, group: str) -> str:
    return f"{parse_url(url).path}/groups/{readable_key(group.encode())}"


def left_then_rejoined(events: Events, member_id: str, within: float) -> None:
    """The watcher sees ``member_id`` leave, then come back."""
    assert events.next(within).left == {member_id}
    assert events.next(within).joined == {member_id}


def test_the_znodes_carry_the_name_the_entry_and_the_digest_acl(
    zookeeper_server: ZooKeeperServer, group_name: str
) -> None:
    url = zookeeper_server.url(credentials=CREDENTIALS)
    with conch.connect(url) as coordinator:
        coordinator.group(group_name).join({"weight": 3})
        path = group_path(url, group_name)
        admin = zookeeper_server.admin(CREDENTIALS)
        stranger = zookeeper_server.admin()
        try:
            assert admin.get(path)[0] == group_name.encode()
            [child] = admin.get_children(path)
            data, stat = admin.get(f"{path}/{child}")
            assert b'"weight":3' in data
            assert stat.ephemeralOwner == session_of(coordinator).client_id[0]
            with pytest.raises(NoAuthError):
                stranger.get(f"{path}/{child}")
        finally:
            for client in (admin, stranger):
                client.stop()
                client.close()


@pytest.mark.parametrize("member_id", [".", "..", "a/b/../c", "é ☃ %2E\n", "x" * 300])
def test_member_ids_that_are_not_znode_names_round_trip(
    zookeeper_url: str, group_name: str, member_id: str
) -> None:
    with conch.connect(zookeeper_url, member_id=member_id) as member, \
            conch.connect(zookeeper_url) as other:
        member.group(group_name).join([member_id])
        assert other.group(group_name).members() == {member_id: [member_id]}
        assert member_node(member_id) not in (".", "..") and "/" not in member_node(member_id)


def test_a_member_znode_deleted_by_hand_is_reported_lost_and_rejoined(
    zookeeper_server: ZooKeeperServer, group_name: str
) -> None:
    url = zookeeper_server.url(credentials=CREDENTIALS)
    with conch.connect(url) as member, conch.connect(url) as watcher:
        group = member.group(group_name)
        group.join({"weight": 2})
        events = Events()
        watcher.group(group_name).watch(events)
        admin = zookeeper_server.admin(CREDENTIALS)
        try:
            admin.delete(f"{group_path(url, group_name)}/{member_node(member.member_id)}")
        finally:
            admin.stop()
            admin.close()
        assert group.lost.wait(PUSHED_WITHIN), "the member's own watch did not fire"
        wait_until(lambda: watcher.group(group_name).members() == {
            member.member_id: {"weight": 2}}, PUSHED_WITHIN, "the member back")
        # Re-joined at once: the watcher may read the members only once it is back.
        seen = [events.queue.get() for _ in range(events.queue.qsize())]
        me, nobody = frozenset({member.member_id}), frozenset[str]()
        assert [(event.left, event.joined) for event in seen] in (
            [], [(me, nobody), (nobody, me)]), seen


@pytest.mark.timeout(60)
def test_an_expired_session_loses_the_entries_and_the_new_session_rejoins(
    zookeeper_server: ZooKeeperServer, zookeeper_url: str, group_name: str
) -> None:
    with conch.connect(zookeeper_url) as member, conch.connect(zookeeper_url) as watcher:
        group = member.group(group_name)
        group.join()
        events = Events()
        watcher.group(group_name).watch(events)
        # Expire the session as ZooKeeper's own tests do: attach to it and close it.
        thief = KazooClient(zookeeper_server.hosts, client_id=session_of(member).client_id)
        thief.start(timeout=10)
        thief.stop()
        thief.close()
        assert group.lost.wait(15), "the member was not told"
        left_then_rejoined(events, member.member_id, 15)


@pytest.mark.timeout(120)
def test_a_restart_within_the_session_timeout_keeps_members_and_watches(
    server: ZooKeeperServer, group_name: str
) -> None:
    url = server.url(credentials=CREDENTIALS)
    with conch.connect(url) as member, conch.connect(url) as watcher:
        group = member.group(group_name)
        group.join()
        events = Events()
        watcher.group(group_name).watch(events)
        server.restart()
        with conch.connect(url) as late:
            late.group(group_name).join()
            assert events.next(10).joined == {late.member_id}
        assert events.next(PUSHED_WITHIN).left == {late.member_id}
        assert not group.lost.is_set(), "the session survived: the entry was never lost"
        assert member.member_id in watcher.group(group_name).members()


def test_a_watched_group_deleted_and_created_again_is_still_watched(
    zookeeper_url: str, group_name: str
) -> None:
    with conch.connect(zookeeper_url) as watcher, conch.connect(zookeeper_url) as member:
        events = Events()
        group = watcher.group(group_name)
        group.watch(events)
        group.create()
        group.delete()
        member.group(group_name).join()
        assert events.next(PUSHED_WITHIN).joined == {member.member_id}


def test_groups_over_tls(zookeeper_tls_url: str, group_name: str) -> None:
    with conch.connect(zookeeper_tls_url) as member, \
            conch.connect(zookeeper_tls_url) as watcher:
        events = Events()
        watcher.group(group_name).watch(events)
        member.group(group_name).join({"tls": True})
        assert events.next(PUSHED_WITHIN).joined == {member.member_id}
        assert watcher.group(group_name).members() == {member.member_id: {"tls": True}}
        member.group(group_name).leave()
        assert events.next(PUSHED_WITHIN).left == {member.member_id}
