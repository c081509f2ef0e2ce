"""What the group tests of the TTL backends (redis, memcached) share: a member whose entry
is dropped behind its back (deleted, the server wiped or restarted) is told and joins
again; a group and a lock of one name stay apart, and any name comes back exact."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import conch
from tests.servers.base import ServerProcess, wait_until

S = TypeVar("S", bound=ServerProcess)

HOSTILE_NAME = ("grp/../*?%s\n\t %% é☃ " * 16).encode()[:256]
"""A group name of 256 bytes that no server key may hold as it is."""


@contextlib.contextmanager
def cleaned_up(server: S) -> Iterator[S]:
    """``server`` for the block, then stopped and its data removed."""
    try:
        yield server
    finally:
        server.cleanup()


def lost_and_joined_again(url: str, group_name: str, drop: Callable[[str], object],
                          within: float) -> float:
    """Join ``group_name`` on ``url``, call ``drop(member_id)`` (which removes the entry
    behind the member's back), and return the seconds until the member was told
    (``group.lost``) and another member sees it back with its capabilities."""
    with conch.connect(url) as member, conch.connect(url) as other:
        group = member.group(group_name)
        group.join({"weight": 7})
        started = time.monotonic()
        drop(member.member_id)
        assert group.lost.wait(within), "the member was not told it was dropped"
        wait_until(lambda: other.group(group_name).members() == {member.member_id:
                                                                  {"weight": 7}},
                   within, "the dropped member back in its group")
        assert group.joined
        return time.monotonic() - started


def group_and_lock_of_one_name_stay_apart(url: str) -> None:
    """A member of group ``HOSTILE_NAME`` that holds lock ``HOSTILE_NAME``: the locks
    listed are its lock alone, the group lists the exact name, and each outlives the
    other."""
    with conch.connect(url) as coordinator:
        group = coordinator.group(HOSTILE_NAME)
        group.join({"weight": 1})
        with coordinator.lock(HOSTILE_NAME):
            mine = [info.key for info in coordinator.holders()
                    if info.holder is not None and info.holder.member_id == coordinator.member_id]
            assert mine == [HOSTILE_NAME]
            assert HOSTILE_NAME.decode() in coordinator.groups()
            group.leave()
            assert coordinator.describe(HOSTILE_NAME).held
        group.join()
        assert not coordinator.describe(HOSTILE_NAME).held
        assert group.members() == {coordinator.member_id: None}
        group.leave()
        group.delete()
        assert HOSTILE_NAME.decode() not in coordinator.groups()
