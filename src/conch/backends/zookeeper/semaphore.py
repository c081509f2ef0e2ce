"""``zookeeper://`` semaphores: a queue of children, each naming its limit; the first
``limit`` children hold (docs/zookeeper.md, *Shared locks and semaphores*)."""

from __future__ import annotations

import uuid

from conch.backends.base import LossCallback
from conch.backends.zookeeper.lock import ZooKeeperLock
from conch.backends.zookeeper.session import ZooKeeperSession
from conch.errors import LimitMismatch
from conch.introspection import HolderStamp

_LIMIT_DIGITS = 12  # a child's name starts with its limit in as many hex digits
MAX_LIMIT = 16 ** _LIMIT_DIGITS - 1


class ZooKeeperPermit(ZooKeeperLock):
    """One holder's permit of a semaphore: it holds once fewer than ``limit`` children are
    older than its own, and waits for the deletion of one of those that hold."""

    def __init__(self, session: ZooKeeperSession, parent: str, stamp: HolderStamp,
                 on_lost: LossCallback, name: bytes, limit: int) -> None:
        if limit > MAX_LIMIT:
            raise ValueError(f"a zookeeper:// semaphore's limit is at most {MAX_LIMIT}")
        super().__init__(session, parent, stamp, on_lost)
        self._name, self._limit = name, limit

    def _new_prefix(self) -> str:
        return f"{self._limit:0{_LIMIT_DIGITS}x}{uuid.uuid4().hex[_LIMIT_DIGITS:]}_"

    def _blockers(self, before: list[str]) -> list[str]:
        # Any older child with another limit: its holders use that one (or it is about to
        # find ours and give up); either way the two must not mix.
        for child in before:
            if (limit := int(child[:_LIMIT_DIGITS], 16)) != self._limit:
                raise LimitMismatch(f"semaphore {self._name!r} is in use with limit "
                                    f"{limit}, not {self._limit}")
        # The holders, as we count them: our turn comes only when one of them goes.
        return before[:self._limit] if len(before) >= self._limit else []
