"""``tooz.hashring``: :class:`conch.hashring.HashRing`, which places every key where tooz's
ring does (docs/hashring.md), with tooz's :class:`UnknownNode` (a ``ToozError``)."""

from __future__ import annotations

import conch
from conch import hashring
from conch.compat.tooz.errors import ToozError

__all__ = ["HashRing", "UnknownNode"]


class UnknownNode(ToozError, conch.UnknownNode):
    """``remove_node`` of a node the ring does not hold (``.node``); also a
    :class:`conch.UnknownNode`."""

    def __init__(self, node: object) -> None:
        conch.UnknownNode.__init__(self, node)
        self.cause = None


class HashRing(hashring.HashRing):
    """conch's ring, raising tooz's :class:`UnknownNode`."""

    def remove_node(self, node: hashring.Node) -> None:
        """Remove ``node``; :class:`UnknownNode` if the ring does not hold it."""
        try:
            super().remove_node(node)
        except conch.UnknownNode:
            raise UnknownNode(node) from None
