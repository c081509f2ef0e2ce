"""``zookeeper://`` shared holds: a child in the lock's own queue, marked shared in its name,
that waits only for the exclusive children older than it (docs/zookeeper.md, *Shared locks
and semaphores*). Exclusive holds keep the lock handle's names and wait for every child."""

from __future__ import annotations

import uuid

from conch.backends.zookeeper.lock import ZooKeeperLock

_KIND = 12
"""Where a child's name tells its kind: a uuid4's version digit, ``4`` in an exclusive
child's (every conch release names them so), :data:`_SHARED` in a shared one's."""
_SHARED = "0"


def is_shared(child: str) -> bool:
    """Whether ``child`` of a lock's queue is a shared hold's."""
    return child[_KIND] == _SHARED


class ZooKeeperSharedLock(ZooKeeperLock):
    """A shared hold of one lock name: in FIFO order with the exclusive ones, beside the
    other shared ones (an exclusive waiter holds back every shared child queued after it)."""

    def _new_prefix(self) -> str:
        unique = uuid.uuid4().hex
        return f"{unique[:_KIND]}{_SHARED}{unique[_KIND + 1:]}_"

    def _blockers(self, before: list[str]) -> list[str]:
        exclusive = [child for child in before if not is_shared(child)]
        return exclusive[-1:]
