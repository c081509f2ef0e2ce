"""``tooz.partitioner``: :class:`Partitioner`, what ``join_partitioned_group`` returns.

It places objects over a group's members with tooz's ring and weights (the members'
``weight`` capability), so a service half on tooz, half on conch agrees on who owns what.
The ring follows the group as ``run_watchers()`` delivers its joins and leaves."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from conch.compat.tooz.errors import MemberNotJoined
from conch.compat.tooz.hashring import HashRing, UnknownNode
from conch.compat.tooz.results import CoordAsyncResult
from conch.compat.tooz.watchers import MemberJoinedGroup, MemberLeftGroup
from conch.group_entry import GroupName
from conch.partitioner import object_key


class GroupCoordinator(Protocol):
    """What a partitioner uses of its coordinator (tooz's group and watcher calls)."""

    _member_id: bytes

    def get_members_with_capabilities(
            self, group_id: GroupName) -> CoordAsyncResult[dict[bytes, Any]]: ...

    def get_member_capabilities(self, group_id: GroupName,
                                member_id: bytes) -> CoordAsyncResult[Any]: ...

    def watch_join_group(self, group_id: GroupName,
                         callback: Callable[[MemberJoinedGroup], Any]) -> None: ...

    def unwatch_join_group(self, group_id: GroupName,
                           callback: Callable[[MemberJoinedGroup], Any]) -> None: ...

    def watch_leave_group(self, group_id: GroupName,
                          callback: Callable[[MemberLeftGroup], Any]) -> None: ...

    def unwatch_leave_group(self, group_id: GroupName,
                            callback: Callable[[MemberLeftGroup], Any]) -> None: ...


def _weight(capabilities: Any) -> Any:
    """tooz's rule: the ``weight`` of dict capabilities, else 1."""
    return capabilities.get("weight", 1) if isinstance(capabilities, dict) else 1


class Partitioner:
    """The members of ``group_id`` that objects belong to, by consistent hashing.

    An object is placed by ``obj.__tooz_hash__()`` (bytes) when it has one, else by
    ``str(obj)`` encoded as UTF-8. Member ids are ``bytes``.
    """

    DEFAULT_PARTITION_NUMBER = HashRing.DEFAULT_PARTITION_NUMBER

    def __init__(self, coordinator: GroupCoordinator, group_id: GroupName,
                 partitions: int = DEFAULT_PARTITION_NUMBER) -> None:
        self.partitions = partitions
        self.group_id = group_id
        self._coord = coordinator
        self.ring = HashRing([], partitions=partitions)
        # Watch first, then read: a change in between is queued and applies harmlessly.
        coordinator.watch_join_group(group_id, self._on_member_join)
        coordinator.watch_leave_group(group_id, self._on_member_leave)
        members = coordinator.get_members_with_capabilities(group_id).get()
        for member, capabilities in members.items():
            self.ring.add_node(member, _weight(capabilities))

    def __repr__(self) -> str:
        return (f"<tooz Partitioner {self.group_id!r}: {len(self.ring.nodes)} members, "
                f"{self.partitions} partitions>")

    def _on_member_join(self, event: MemberJoinedGroup) -> None:
        try:
            capabilities = self._coord.get_member_capabilities(
                self.group_id, event.member_id).get()
        except MemberNotJoined:
            return  # it left already: its leave event follows
        self.ring.add_node(event.member_id, _weight(capabilities))

    def _on_member_leave(self, event: MemberLeftGroup) -> None:
        with contextlib.suppress(UnknownNode):  # it left before the members were read
            self.ring.remove_node(event.member_id)

    @staticmethod
    def _hash_object(obj: object) -> bytes:
        """The bytes ``obj`` is placed by (tooz's rule)."""
        return object_key(obj)

    def members_for_object(self, obj: object, ignore_members: Iterable[Any] | None = None,
                           replicas: int = 1) -> set[Any]:
        """The ``replicas`` members ``obj`` belongs to, leaving out ``ignore_members``."""
        return self.ring.get_nodes(self._hash_object(obj), ignore_nodes=ignore_members,
                                   replicas=replicas)

    def belongs_to_member(self, obj: object, member_id: bytes,
                          ignore_members: Iterable[Any] | None = None,
                          replicas: int = 1) -> bool:
        """True when ``obj`` belongs to ``member_id``."""
        return member_id in self.members_for_object(obj, ignore_members, replicas)

    def belongs_to_self(self, obj: object, ignore_members: Iterable[Any] | None = None,
                        replicas: int = 1) -> bool:
        """True when ``obj`` belongs to this coordinator's member."""
        return self.belongs_to_member(obj, self._coord._member_id, ignore_members, replicas)

    def stop(self) -> None:
        """Stop following the group (``leave_partitioned_group`` also leaves it)."""
        self._coord.unwatch_join_group(self.group_id, self._on_member_join)
        self._coord.unwatch_leave_group(self.group_id, self._on_member_leave)
