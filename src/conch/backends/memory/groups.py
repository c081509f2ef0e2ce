"""``memory://`` groups: each group's entries by member id, pushed to its subscribers at
every change (docs/memory.md)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from conch.backends.base import GroupStore, LossCallback
from conch.backends.kit.group_subscribers import GroupSubscribers
from conch.errors import GroupNotEmpty, GroupNotFound


@dataclasses.dataclass
class Groups:
    """The groups of one ``memory://`` URL."""

    mutex: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    entries: dict[bytes, dict[str, bytes]] = dataclasses.field(default_factory=dict)
    subscribers: GroupSubscribers = dataclasses.field(
        default_factory=lambda: GroupSubscribers("", None))


class MemoryGroupStore(GroupStore):
    """One coordinator's view of the URL's groups."""

    poll_interval = 60.0  # every change is pushed

    def __init__(self, groups: Groups, member_id: str) -> None:
        self._groups = groups
        self._member_id = member_id

    def create(self, group: bytes) -> bool:
        with self._groups.mutex:
            if group in self._groups.entries:
                return False
            self._groups.entries[group] = {}
            return True

    def delete(self, group: bytes) -> None:
        with self._groups.mutex:
            entries = self._groups.entries.get(group)
            if entries is None:
                raise GroupNotFound(f"group {group!r} does not exist")
            if entries:
                raise GroupNotEmpty(f"group {group!r} still has {len(entries)} members")
            del self._groups.entries[group]

    def names(self) -> list[bytes]:
        with self._groups.mutex:
            return list(self._groups.entries)

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        with self._groups.mutex:
            entries = self._groups.entries.get(group)
            if entries is None:
                raise GroupNotFound(f"group {group!r} does not exist")
            entries[self._member_id] = data
            self._groups.subscribers.wake([group])

    def leave(self, group: bytes) -> bool:
        with self._groups.mutex:
            if self._groups.entries.get(group, {}).pop(self._member_id, None) is None:
                return False
            self._groups.subscribers.wake([group])
            return True

    def members(self, group: bytes) -> dict[str, bytes] | None:
        with self._groups.mutex:
            entries = self._groups.entries.get(group)
            return None if entries is None else dict(entries)

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        return self._groups.subscribers.subscribe(group, changed)

    def close(self) -> None:
        """The coordinator closed: its entries go."""
        with self._groups.mutex:
            left = [group for group, entries in self._groups.entries.items()
                    if entries.pop(self._member_id, None) is not None]
            self._groups.subscribers.wake(left)
