"""redis:// groups on real servers, beyond the contract: a member dropped behind its back
(its key deleted, the server wiped or restarted) is told and joins again; a dead member's
stale entry is pruned; joins are pushed over pub/sub (also after a restart, over TLS and
through Sentinel after a failover); group keys stay apart from lock keys."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest

import conch
from conch.backends.redis.groups import group_keys
from tests.backends.group_faults import (
    cleaned_up,
    group_and_lock_of_one_name_stay_apart,
    lost_and_joined_again,
)
from tests.backends.test_redis_sentinel import SentinelGroup, running_group
from tests.contract.test_group_watch import Events
from tests.servers.base import wait_until
from tests.servers.redis import SHORT_TTL, RedisProcess, start_redis

PUSHED = 1.5
"""Seconds within which a pushed change reaches a watcher (the URLs of the push tests make
the poll interval 10 s)."""


@pytest.fixture
def group_name() -> str:
    """A group name no other test uses (the shared server outlives the test)."""
    return f"group-{uuid.uuid4().hex}"


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A server of this test alone: free to wipe and restart."""
    with cleaned_up(start_redis()) as server:
        yield server


def member_key(group_name: str, member_id: str) -> bytes:
    return group_keys(group_name.encode()).member(member_id.encode())


def test_a_member_whose_key_is_deleted_is_told_and_joins_again(
    redis_server: RedisProcess, redis_url: str, group_name: str
) -> None:
    with redis_server.admin() as admin:
        took = lost_and_joined_again(
            redis_url, group_name, lambda member: admin.delete(member_key(group_name, member)),
            within=SHORT_TTL + 3)
    print(f"\nredis: a member whose key was deleted was back after {took:.2f} s")


def test_a_wiped_server_loses_the_members_and_they_join_again(
    own_redis: RedisProcess, group_name: str
) -> None:
    with own_redis.admin() as admin:
        lost_and_joined_again(f"{own_redis.url}/0?ttl={SHORT_TTL}", group_name,
                              lambda member: admin.flushall(), within=SHORT_TTL + 3)


def test_after_a_restart_members_join_again_and_joins_are_still_pushed(
    own_redis: RedisProcess, group_name: str
) -> None:
    lost_and_joined_again(f"{own_redis.url}/0?ttl={SHORT_TTL}", group_name,
                          lambda member: own_redis.restart(), within=SHORT_TTL + 5)
    url = f"{own_redis.url}/0?ttl=30"
    with conch.connect(url) as watcher, conch.connect(url) as joining:
        assert watcher.group(group_name).poll_interval == 10
        events = Events()
        watcher.group(group_name).watch(events)
        own_redis.restart()
        time.sleep(1)  # the listener subscribes again (its pause after a failure: 0.5 s)
        joining.group(group_name).join()
        assert events.next(PUSHED).joined == {joining.member_id}


def test_a_dead_members_stale_entry_is_pruned_by_the_next_read_or_join(
    redis_server: RedisProcess, redis_url: str, group_name: str
) -> None:
    keys = group_keys(group_name.encode())
    with conch.connect(redis_url) as member, redis_server.admin() as admin:
        group = member.group(group_name)
        group.create()
        admin.hset(keys.entries, mapping={f"ghost-{n}": b"{}" for n in range(20)})
        group.join()
        assert admin.hkeys(keys.entries) == [member.member_id.encode()]
        admin.hset(keys.entries, "ghost", b"{}")
        assert group.members() == {member.member_id: None}
        assert not admin.hexists(keys.entries, "ghost")


def test_joins_and_leaves_are_pushed_not_polled(
    redis_server: RedisProcess, group_name: str
) -> None:
    url = f"{redis_server.url}/0?ttl=30"
    with conch.connect(url) as watcher, conch.connect(url) as other:
        events = Events()
        watcher.group(group_name).watch(events)
        other.group(group_name).join()
        assert events.next(PUSHED).joined == {other.member_id}
        other.group(group_name).leave()
        assert events.next(PUSHED).left == {other.member_id}


def test_group_and_lock_keys_stay_apart(redis_server: RedisProcess, redis_url: str) -> None:
    group_and_lock_of_one_name_stay_apart(redis_url)
    with redis_server.admin() as admin:
        holder_keys = list(admin.scan_iter(b"conch:*:holder"))
        assert not [key for key in holder_keys if key.startswith(b"conch:group")]


def test_groups_over_tls(redis_tls_url: str, group_name: str) -> None:
    with conch.connect(redis_tls_url) as watcher, conch.connect(redis_tls_url) as other:
        events = Events()
        watcher.group(group_name).watch(events)
        other.group(group_name).join({"tls": True})
        assert events.next(SHORT_TTL / 3 + 3).joined == {other.member_id}
        assert watcher.group(group_name).members() == {other.member_id: {"tls": True}}


def test_groups_through_sentinel_survive_a_failover(group_name: str) -> None:
    with contextlib.contextmanager(running_group)() as sentinels:
        failover = joins_pushed_across_a_failover(sentinels, group_name)
    print(f"\nfailover took {failover:.2f} s; the members stayed in, joins still pushed")


def joins_pushed_across_a_failover(sentinel_group: SentinelGroup, group_name: str) -> float:
    """Members in ``group_name`` through ``sentinel_group``'s sentinel stay in across a
    failover, and a join after it reaches a watcher pushed; returns the failover's time."""
    url = sentinel_group.url("ttl=30")
    with conch.connect(url) as watcher, conch.connect(url) as member, \
            conch.connect(url) as late:
        member.group(group_name).join({"weight": 1})
        events = Events()
        watcher.group(group_name).watch(events)
        failover = sentinel_group.fail_over()
        time.sleep(1)  # the listener subscribes again (its pause after a failure: 0.5 s)
        late.group(group_name).join()
        while late.member_id not in events.next(PUSHED + 2).joined:
            pass  # the member itself may have left and come back: a lagging replica
        wait_until(lambda: set(watcher.group(group_name).members()) == {
            member.member_id, late.member_id}, 10, "both members on the new master")
    return failover


def test_an_acl_user_without_the_groups_channel_gets_a_clear_error(group_name: str) -> None:
    acl = ["--user", "default", "off", "--user", "app", "on", ">app-pw", "~conch:*", "+@all"]
    with cleaned_up(start_redis(*acl, username="app", password="app-pw")) as server, \
            conch.connect(f"{server.url}/0?ttl={SHORT_TTL}") as coordinator:
        with pytest.raises(conch.BackendUnavailable, match="can't publish to the channel"):
            coordinator.group(group_name).join()
        assert not coordinator.group(group_name).joined
        with coordinator.lock(group_name) as lock:
            assert lock.token is not None
