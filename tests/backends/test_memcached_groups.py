"""memcached:// groups on real servers, beyond the contract: a member dropped behind its
back (its entry deleted, the server flushed or restarted) is told and joins again; a dead
member is pruned from the roster by the next read or join; members joining at once all
get in (CAS); group keys stay apart from lock keys; TLS."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client  # type: ignore[import-untyped]

import conch
from conch.backends.memcached.groups import REGISTRY_KEY, entry_key, roster_key
from tests.backends.group_faults import (
    cleaned_up,
    group_and_lock_of_one_name_stay_apart,
    lost_and_joined_again,
)
from tests.contract.test_group_watch import Events
from tests.servers.memcached import SHORT_TTL, MemcachedProcess, start_memcached

WITHIN = SHORT_TTL + 3
"""Seconds for a dropped member to be told and back: a renewal beat, a margin."""


@pytest.fixture
def group_name() -> str:
    """A group name no other test uses (the shared server outlives the test)."""
    return f"group-{uuid.uuid4().hex}"


@pytest.fixture
def own_memcached() -> Iterator[MemcachedProcess]:
    """A server of this test alone: free to flush and restart (groups need no settling)."""
    with cleaned_up(start_memcached(settle=False)) as server:
        yield server


@pytest.fixture
def admin(memcached_server: MemcachedProcess) -> Iterator[Client]:
    """A plain client of the shared server, for the tests' own reads and writes; each write
    waits for the server's reply (pymemcache's default does not), so conch reads after it."""
    with contextlib.closing(Client(("127.0.0.1", memcached_server.port), timeout=5,
                                   default_noreply=False)) as client:
        yield client


def test_a_member_whose_entry_is_deleted_is_told_and_joins_again(
    admin: Client, memcached_url: str, group_name: str
) -> None:
    took = lost_and_joined_again(
        memcached_url, group_name,
        lambda member: admin.delete(entry_key(group_name.encode(), member)), WITHIN)
    print(f"\nmemcached: a member whose entry was deleted was back after {took:.2f} s")


def test_a_flushed_server_loses_the_members_and_they_join_again(
    own_memcached: MemcachedProcess, group_name: str
) -> None:
    lost_and_joined_again(f"{own_memcached.url}?ttl={SHORT_TTL}", group_name,
                          lambda member: own_memcached.command(b"flush_all"), WITHIN)


def test_a_restarted_server_loses_the_members_and_they_join_again(
    own_memcached: MemcachedProcess, group_name: str
) -> None:
    lost_and_joined_again(f"{own_memcached.url}?ttl={SHORT_TTL}", group_name,
                          lambda member: own_memcached.restart(), WITHIN + 5)


def test_a_dead_member_is_pruned_from_the_roster_by_the_next_read_or_join(
    admin: Client, memcached_url: str, group_name: str
) -> None:
    group_bytes = group_name.encode()
    with conch.connect(memcached_url) as member:
        group = member.group(group_name)
        group.create()
        admin.set(roster_key(group_bytes), json.dumps([f"ghost-{n}" for n in range(20)]))
        group.join()
        assert json.loads(admin.get(roster_key(group_bytes))) == [member.member_id]
        admin.set(roster_key(group_bytes), json.dumps([member.member_id, "ghost"]))
        assert group.members() == {member.member_id: None}
        assert json.loads(admin.get(roster_key(group_bytes))) == [member.member_id]


def test_members_joining_at_once_all_get_in(memcached_url: str, group_name: str) -> None:
    coordinators = [conch.connect(memcached_url) for _ in range(12)]
    try:
        start = threading.Barrier(len(coordinators))

        def join(coordinator: conch.Coordinator) -> None:
            start.wait()
            coordinator.group(group_name).join({"id": coordinator.member_id})

        threads = [threading.Thread(target=join, args=(coordinator,))
                   for coordinator in coordinators]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        members = coordinators[0].group(group_name).members()
        assert members == {c.member_id: {"id": c.member_id} for c in coordinators}
    finally:
        for coordinator in coordinators:
            coordinator.stop()


def test_group_and_lock_keys_stay_apart(admin: Client, memcached_url: str) -> None:
    group_and_lock_of_one_name_stay_apart(memcached_url)
    assert admin.get(REGISTRY_KEY) is not None


def test_something_else_in_a_group_key_is_a_clear_error(
    admin: Client, memcached_url: str, group_name: str
) -> None:
    admin.set(roster_key(group_name.encode()), b"not conch's")
    with conch.connect(memcached_url) as member, \
            pytest.raises(conch.BackendUnavailable, match="something else than conch's list"):
        member.group(group_name).members()


def test_groups_over_tls(memcached_tls_url: str, group_name: str) -> None:
    with conch.connect(memcached_tls_url) as watcher, conch.connect(memcached_tls_url) as other:
        events = Events()
        watcher.group(group_name).watch(events)
        other.group(group_name).join({"tls": True})
        assert events.next(WITHIN).joined == {other.member_id}
        assert watcher.group(group_name).members() == {other.member_id: {"tls": True}}


def test_a_roster_that_keeps_changing_fails_the_join_after_the_timeout(
    memcached_url: str, group_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with conch.connect(f"{memcached_url}&timeout=0.3") as member:
        group = member.group(group_name)
        group.create()
        monkeypatch.setattr(Client, "cas", lambda *args, **kwargs: False)  # always beaten
        started = time.monotonic()
        with pytest.raises(conch.BackendUnavailable, match=r"kept changing for 0\.3 s"):
            group.join()
        assert time.monotonic() - started < 2
        assert not group.joined
