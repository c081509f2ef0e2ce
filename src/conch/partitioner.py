"""Consistent partitioning of objects over a group's live members:
``coordinator.partitioner(name, partitions=..., replicas=...)``.

Placement is :class:`conch.hashring.HashRing`'s (the same as tooz's for the same members,
weights and partitions), over the members' ``weight`` capability; the ring follows joins
and leaves as the group's watcher is told of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from conch.group import Group
from conch.group_watch import GroupEvent, Subscription
from conch.hashring import HashRing


def object_key(obj: object) -> bytes:
    """The bytes an object is placed by: its ``__tooz_hash__()`` when it has one, else
    ``str(obj)`` as UTF-8 (tooz's rule, so both place an object alike)."""
    tooz_hash = getattr(obj, "__tooz_hash__", None)
    if tooz_hash is not None:
        return bytes(tooz_hash())
    return str(obj).encode("utf-8")


def weight_of(capabilities: Any) -> int:
    """A member's weight: its capabilities' ``weight`` when they are a dict, else 1."""
    if isinstance(capabilities, dict):
        weight = capabilities.get("weight", 1)
        if isinstance(weight, int) and not isinstance(weight, bool) and weight > 0:
            return weight
    return 1


class Partitioner:
    """This member's share of a partitioned group (it joined the group on creation).

    ``owns(obj)`` tells whether this member is one of the ``replicas`` members an object
    belongs to; ``members_for(obj)`` names them. Call :meth:`stop` to leave.
    """

    def __init__(self, group: Group, partitions: int, replicas: int,
                 capabilities: dict[str, Any]) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        self.group = group
        self.partitions = partitions
        self.replicas = replicas
        self._mutex = threading.Lock()
        self._ring = HashRing([], partitions=partitions)
        self._subscription: Subscription = group.watch(self._follow)
        group.join(capabilities)
        self._rebuild(group.members())

    def __repr__(self) -> str:
        return (f"<conch.Partitioner {self.group.name!r} {len(self.ring.nodes)} members, "
                f"{self.partitions} partitions>")

    @property
    def ring(self) -> HashRing:
        """The ring in use now (replaced, not changed, when the members change)."""
        with self._mutex:
            return self._ring

    def members_for(self, obj: object, replicas: int | None = None,
                    ignore: Iterable[str] = ()) -> set[str]:
        """The members ``obj`` belongs to (``replicas`` of them, default the partitioner's),
        leaving out ``ignore``."""
        nodes = self.ring.get_nodes(object_key(obj), ignore_nodes=list(ignore),
                                    replicas=replicas or self.replicas)
        return {node if isinstance(node, str) else node.decode() for node in nodes}

    def owns(self, obj: object, replicas: int | None = None) -> bool:
        """True when this member is one of those ``obj`` belongs to."""
        return self.group.member_id in self.members_for(obj, replicas)

    def stop(self) -> None:
        """Stop following the group and leave it."""
        self._subscription.cancel()
        self.group.leave()

    def _follow(self, event: GroupEvent) -> None:
        self._rebuild(event.members)

    def _rebuild(self, members: dict[str, Any] | Any) -> None:
        ring = HashRing([], partitions=self.partitions)
        for member, capabilities in sorted(members.items()):
            ring.add_node(member, weight=weight_of(capabilities))
        with self._mutex:
            self._ring = ring
