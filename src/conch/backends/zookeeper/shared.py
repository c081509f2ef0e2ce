"""``zookeeper://`` shared holds: a child in the lock's own queue, marked shared in its name,
that waits only for the older exclusive children (docs/zookeeper.md, *Shared locks*)."""

from __future__ import annotations

import uuid

from conch.backends.zookeeper.lock import ZooKeeperLock

_KIND = 12  # where a child's name tells its kind: a uuid4's version digit, 4 if exclusive
_SHARED = "0"


class ZooKeeperSharedLock(ZooKeeperLock):
    """A shared hold of one lock name: in FIFO order with the exclusive ones, beside the
    other shared ones (an exclusive waiter holds back every shared child queued after it)."""

    def _new_prefix(self) -> str:
        unique = uuid.uuid4().hex
        return f"{unique[:_KIND]}{_SHARED}{unique[_KIND + 1:]}_"

    def _blockers(self, before: list[str]) -> list[str]:
        exclusive = [child for child in before if child[_KIND] != _SHARED]
        return exclusive[-1:]
