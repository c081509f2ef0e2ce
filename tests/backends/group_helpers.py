"""What the group tests of the etcd and zookeeper backends share (beside
tests/backends/group_faults.py): unique names, a member watched by another coordinator,
the checks on what the watcher heard, and the TLS case."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import conch
from tests.contract.test_group_watch import Events

PUSHED_WITHIN = 3.0
"""Seconds within which a watcher hears of a change the server pushed."""


def unique_group() -> str:
    """A group name no other test uses."""
    return f"group-{uuid.uuid4().hex}"


@contextlib.contextmanager
def member_and_watcher(url: str, group: str, capabilities: Any = None
                       ) -> Iterator[tuple[conch.Coordinator, conch.Coordinator, Events]]:
    """Two coordinators of ``url``: a member of ``group`` (joined with ``capabilities``) and
    one watching the group, with what its watcher hears."""
    with conch.connect(url) as member, conch.connect(url) as watcher:
        member.group(group).join(capabilities)
        events = Events()
        watcher.group(group).watch(events)
        yield member, watcher, events


def drain(events: Events) -> list[conch.GroupEvent]:
    """The events heard so far (forgotten)."""
    return [events.queue.get() for _ in range(events.queue.qsize())]


def left_then_rejoined(events: Events, member_id: str, within: float) -> None:
    """The watcher hears ``member_id`` leave, then come back."""
    assert events.next(within).left == {member_id}
    assert events.next(within).joined == {member_id}


def check_groups_over_tls(url: str) -> None:
    """Join, read, watch and leave a group through a TLS URL."""
    group = unique_group()
    with member_and_watcher(url, group, {"tls": True}) as (member, watcher, events):
        assert watcher.group(group).members() == {member.member_id: {"tls": True}}
        member.group(group).leave()
        assert events.next(PUSHED_WITHIN).left == {member.member_id}
