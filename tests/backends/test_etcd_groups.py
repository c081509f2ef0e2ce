"""etcd:// groups beyond the contract suite: where the keys live, the entry lost behind the
member's back (deleted, lease revoked, server wiped) and re-joined, a restart, TLS."""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time

import pytest

import conch
from conch.backends.kit.naming import readable_key
from conch.url import parse_url
from tests.backends.group_faults import cleaned_up, group_and_lock_of_one_name_stay_apart
from tests.backends.group_helpers import (
    PUSHED_WITHIN,
    check_groups_over_tls,
    left_then_rejoined,
    member_and_watcher,
    unique_group,
)
from tests.backends.test_etcd import backend_of
from tests.contract.test_group_watch import Events
from tests.servers.base import wait_until
from tests.servers.etcd import EtcdServer, start_etcd

TTL = 3
TOLD_WITHIN = TTL / 3 + 3.0
"""Seconds within which the heartbeat (every ttl/3) notices an entry gone."""


def member_key(url: str, group: str, member_id: str) -> str:
    return f"{parse_url(url).path}/group-members/{readable_key(group.encode())}/{member_id}"


def test_groups_live_beside_the_locks_and_conch_locks_ignores_them(
    etcd_server: EtcdServer, lock_name: str
) -> None:
    url, group = etcd_server.url(ttl=TTL), unique_group()
    spoof = '{"name":"not-a-lock","member":"x"}'  # a group named like a lock's stamp
    with conch.connect(url) as coordinator:
        coordinator.group(spoof).join({"weight": 1})
        coordinator.group(group).join()
        with coordinator.lock(lock_name):
            assert [info.name for info in coordinator.holders()] == [lock_name]
        prefix = parse_url(url).path
        keys = etcd_server.keys(prefix + "/")
        assert member_key(url, spoof, coordinator.member_id) in keys
        assert f"{prefix}/groups/{readable_key(group.encode())}" in keys
        assert all(len(key) < len(prefix) + 200 for key in keys), "names are hashed"
        assert sorted(coordinator.groups()) == sorted([spoof, group])


def test_a_group_and_a_lock_of_one_hostile_name_stay_apart(etcd_url: str) -> None:
    group_and_lock_of_one_name_stay_apart(etcd_url)


def test_a_member_key_deleted_in_etcd_is_reported_lost_and_rejoined(
    etcd_server: EtcdServer,
) -> None:
    url, group = etcd_server.url(ttl=TTL), unique_group()
    with member_and_watcher(url, group, {"weight": 2}) as (member, watcher, events):
        etcd_server.call("/v3/kv/deleterange", {"key": base64.b64encode(
            member_key(url, group, member.member_id).encode()).decode()})
        assert member.group(group).lost.wait(TOLD_WITHIN), "the heartbeat did not notice"
        left_then_rejoined(events, member.member_id, TOLD_WITHIN)
        assert watcher.group(group).members() == {member.member_id: {"weight": 2}}


def test_a_revoked_lease_loses_the_entries_and_they_come_back_on_a_new_lease(
    etcd_server: EtcdServer,
) -> None:
    url, group = etcd_server.url(ttl=TTL), unique_group()
    with member_and_watcher(url, group) as (member, watcher, events):
        second = member.group(group + "-2")
        second.join()
        old_lease = backend_of(member).session.lease().id
        etcd_server.call("/v3/lease/revoke", {"ID": str(old_lease)})
        assert events.next(PUSHED_WITHIN).left == {member.member_id}, "not pushed"
        assert member.group(group).lost.wait(TOLD_WITHIN) and second.lost.wait(TOLD_WITHIN)
        assert events.next(TOLD_WITHIN).joined == {member.member_id}
        assert backend_of(member).session.lease().id != old_lease
        wait_until(lambda: member.member_id in watcher.group(group + "-2").members(),
                   TOLD_WITHIN, "the second group re-joined")


@pytest.mark.timeout(120)
def test_a_server_wiped_while_members_are_in_gets_its_groups_and_members_back() -> None:
    group = unique_group()
    with cleaned_up(start_etcd()) as server, \
            member_and_watcher(server.url(ttl=TTL), group, {"zone": "a"}) as (
                member, watcher, _):
        watcher.group(group).join()
        server.stop()
        shutil.rmtree(f"{server.data_dir}/member")
        server.ensure_running()
        # Their leases are unknown to the new cluster: both are told, and both re-join.
        assert member.group(group).lost.wait(2 * TTL + 5)
        assert watcher.group(group).lost.wait(2 * TTL + 5)
        wait_until(lambda: len(watcher.group(group).members()) == 2, 15, "both back")
        assert watcher.group(group).members()[member.member_id] == {"zone": "a"}
        assert group in member.groups()
        # The watch was opened anew on the new server: changes are pushed again.
        later = Events()
        watcher.group(group).watch(later)
        with conch.connect(member.url) as late:
            late.group(group).join()
            assert later.next(PUSHED_WITHIN).joined == {late.member_id}


@pytest.mark.timeout(120)
def test_a_restart_with_its_data_keeps_the_members_and_the_watch_follows() -> None:
    group = unique_group()
    with cleaned_up(start_etcd()) as server, \
            member_and_watcher(server.url(ttl=TTL), group) as (member, watcher, events):
        server.restart()
        with conch.connect(member.url) as late:
            late.group(group).join()
            # The watch stream ended with the server and was opened again (or the join is
            # read at the reopening): the watcher hears of it without waiting for a poll.
            deadline = time.monotonic() + 10
            seen: set[str] = set()
            while late.member_id not in seen:
                seen |= events.next(max(0.1, deadline - time.monotonic())).joined
        assert member.member_id in watcher.group(group).members()


def test_one_watch_thread_serves_every_group_and_stopping_ends_it(etcd_url: str) -> None:
    def watch_threads() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate()
                if thread.name.startswith("conch-etcd-watch")]

    before = len(watch_threads())
    with conch.connect(etcd_url) as coordinator:
        coordinator.group(unique_group()).watch(Events())
        coordinator.group(unique_group()).join()
        wait_until(lambda: len(watch_threads()) == before + 1, 5, "one watch for both groups")
    wait_until(lambda: len(watch_threads()) == before, 5, "the watch thread to end")


def test_a_forked_child_leaves_its_parents_membership_and_watch_alone(etcd_url: str) -> None:
    group = unique_group()
    with member_and_watcher(etcd_url, group) as (member, watcher, events):
        child = os.fork()
        if child == 0:
            try:  # the parent's coordinators, stopped in the child: their entries stay
                watcher.stop()
                member.stop()
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        time.sleep(TTL / 3 + 0.5)  # a renewal and a key check of the parent's session
        assert not member.group(group).lost.is_set()
        assert set(watcher.group(group).members()) == {member.member_id}
        with conch.connect(etcd_url) as late:
            late.group(group).join()
            assert events.next(PUSHED_WITHIN).joined == {late.member_id}, "the stream lives"


def test_groups_over_tls(etcd_tls_url: str) -> None:
    check_groups_over_tls(etcd_tls_url)
