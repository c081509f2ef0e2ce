"""zookeeper:// groups beyond the contract suite: the znodes and their ACL, member ids that
are not znode names, the entry lost behind the member's back (deleted, session expired) and
re-joined, a restart, a group deleted and created again, TLS."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import NoAuthError  # type: ignore[import-untyped]

import conch
from conch.backends.kit.naming import readable_key
from conch.backends.zookeeper.groups import member_node
from conch.url import parse_url
from tests.backends.group_faults import cleaned_up, group_and_lock_of_one_name_stay_apart
from tests.backends.group_helpers import (
    PUSHED_WITHIN,
    check_groups_over_tls,
    drain,
    left_then_rejoined,
    member_and_watcher,
    unique_group,
)
from tests.backends.test_zookeeper import CREDENTIALS, session_of
from tests.chaos.proxy import Proxy
from tests.contract.test_group_watch import Events
from tests.servers.base import wait_until
from tests.servers.zookeeper import ZooKeeperServer, start_zookeeper


def group_path(url: str, group: str) -> str:
    return f"{parse_url(url).path}/groups/{readable_key(group.encode())}"


@contextlib.contextmanager
def admin_client(server: ZooKeeperServer, credentials: str | None) -> Iterator[KazooClient]:
    """A kazoo client of the test's own (with ``credentials``: ``user:password``)."""
    client = server.admin(credentials)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def test_the_znodes_carry_the_name_the_entry_and_the_digest_acl(
    zookeeper_server: ZooKeeperServer,
) -> None:
    url, group = zookeeper_server.url(credentials=CREDENTIALS), unique_group()
    with conch.connect(url) as coordinator, admin_client(zookeeper_server, CREDENTIALS) as admin, \
            admin_client(zookeeper_server, None) as stranger:
        coordinator.group(group).join({"weight": 3})
        path = group_path(url, group)
        assert admin.get(path)[0] == group.encode()
        [child] = admin.get_children(path)
        data, stat = admin.get(f"{path}/{child}")
        assert b'"weight":3' in data
        assert stat.ephemeralOwner == session_of(coordinator).client_id[0]
        with pytest.raises(NoAuthError):
            stranger.get(f"{path}/{child}")


def test_a_group_and_a_lock_of_one_hostile_name_stay_apart(zookeeper_url: str) -> None:
    group_and_lock_of_one_name_stay_apart(zookeeper_url)


@pytest.mark.parametrize("member_id", [".", "..", "a/b/../c", "é ☃ %2E\n", "x" * 300])
def test_member_ids_that_are_not_znode_names_round_trip(
    zookeeper_url: str, member_id: str
) -> None:
    group = unique_group()
    with conch.connect(zookeeper_url, member_id=member_id) as member, \
            conch.connect(zookeeper_url) as other:
        member.group(group).join([member_id])
        assert other.group(group).members() == {member_id: [member_id]}
        assert member_node(member_id) not in (".", "..") and "/" not in member_node(member_id)


def test_a_member_znode_deleted_by_hand_is_reported_lost_and_rejoined(
    zookeeper_server: ZooKeeperServer,
) -> None:
    url, group = zookeeper_server.url(credentials=CREDENTIALS), unique_group()
    with member_and_watcher(url, group, {"weight": 2}) as (member, watcher, events), \
            admin_client(zookeeper_server, CREDENTIALS) as admin:
        admin.delete(f"{group_path(url, group)}/{member_node(member.member_id)}")
        assert member.group(group).lost.wait(PUSHED_WITHIN), "its own watch did not fire"
        wait_until(lambda: watcher.group(group).members() == {
            member.member_id: {"weight": 2}}, PUSHED_WITHIN, "the member back")
        # Re-joined at once: the watcher may read the members only once it is back.
        me, nobody = frozenset({member.member_id}), frozenset[str]()
        assert [(event.left, event.joined) for event in drain(events)] in (
            [], [(me, nobody), (nobody, me)])


@pytest.mark.timeout(60)
def test_an_expired_session_loses_the_entries_and_the_new_session_rejoins(
    zookeeper_server: ZooKeeperServer, zookeeper_url: str
) -> None:
    group = unique_group()
    with member_and_watcher(zookeeper_url, group) as (member, _, events):
        # Expire the session as ZooKeeper's own tests do: attach to it and close it.
        thief = KazooClient(zookeeper_server.hosts, client_id=session_of(member).client_id)
        thief.start(timeout=10)
        thief.stop()
        thief.close()
        assert member.group(group).lost.wait(15), "the member was not told"
        left_then_rejoined(events, member.member_id, 15)


@pytest.mark.timeout(120)
def test_a_restart_keeps_the_members_and_the_watch_follows() -> None:
    group = unique_group()
    with cleaned_up(start_zookeeper()) as server:
        url = server.url(credentials=CREDENTIALS)
        with member_and_watcher(url, group) as (member, watcher, events):
            server.restart()
            with conch.connect(url) as late:
                late.group(group).join()
                assert events.next(10).joined == {late.member_id}
            assert events.next(PUSHED_WITHIN).left == {late.member_id}
            # The session survived, with its entry (reported lost, and re-joined, only if
            # the restart outlasted a third of the session timeout: a loaded machine).
            assert member.member_id in watcher.group(group).members()


@pytest.mark.timeout(120)
def test_a_wiped_server_gets_its_groups_and_members_back_in_new_sessions() -> None:
    group = unique_group()
    with cleaned_up(start_zookeeper()) as server:
        url = server.url(credentials=CREDENTIALS, timeout=2)
        with member_and_watcher(url, group, {"zone": "a"}) as (member, watcher, events):
            watcher.group(group).join()
            server.wipe()
            assert member.group(group).lost.wait(15), "the member was not told"
            assert watcher.group(group).lost.wait(15), "the watcher was not told"

            def both_back() -> bool:
                try:  # a read fails while conch opens the new session
                    return watcher.group(group).members().get(member.member_id) == {"zone": "a"}
                except conch.BackendUnavailable:
                    return False
            wait_until(both_back, 15, "the member back with its entry")
            assert watcher.member_id in watcher.group(group).members()
            drain(events)
            # The watch was set again in the new session: changes are pushed again.
            with conch.connect(url) as late:
                late.group(group).join()
                assert events.next(PUSHED_WITHIN).joined == {late.member_id}


def test_a_connection_dropped_and_back_at_once_keeps_the_entry_and_the_watch(
    zookeeper_server: ZooKeeperServer, zookeeper_url: str
) -> None:
    group = unique_group()
    with Proxy(zookeeper_server.port) as link:
        via_link = zookeeper_url.replace(zookeeper_server.hosts, f"127.0.0.1:{link.port}")
        with member_and_watcher(via_link, group) as (member, watcher, events):
            session_id = session_of(member).client_id[0]
            assert link.cut() == 2
            wait_until(lambda: session_of(member).state == "CONNECTED"
                       and session_of(watcher).state == "CONNECTED", 5, "reconnected")
            # Past the moment an outage that long would have been reported (timeout / 3).
            assert not member.group(group).lost.wait(10 / 3 + 1)
            assert session_of(member).client_id[0] == session_id
            with conch.connect(zookeeper_url) as late:
                late.group(group).join()
                assert events.next(PUSHED_WITHIN).joined == {late.member_id}
            assert set(watcher.group(group).members()) == {member.member_id}


def test_a_watched_group_deleted_and_created_again_is_still_watched(zookeeper_url: str) -> None:
    group = unique_group()
    with conch.connect(zookeeper_url) as watcher, conch.connect(zookeeper_url) as member:
        events = Events()
        watcher.group(group).watch(events)
        watcher.group(group).create()
        watcher.group(group).delete()
        member.group(group).join()
        assert events.next(PUSHED_WITHIN).joined == {member.member_id}


def test_groups_over_tls(zookeeper_tls_url: str) -> None:
    check_groups_over_tls(zookeeper_tls_url)
