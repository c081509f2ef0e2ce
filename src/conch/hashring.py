"""Consistent hashing that places every key on the node ``tooz.hashring.HashRing`` picks.

Services moving from tooz to conch one process at a time keep each key where it was.
docs/hashring.md describes the ring, the promise, and the few inputs on which conch differs.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import threading
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from conch.errors import UnknownNode

Node = str | bytes
Key = str | bytes | bytearray | memoryview


@functools.cache
def hash_functions() -> frozenset[str]:
    """The hashlib names a ring accepts here: fixed-size digests (not ``shake_*``)."""
    usable = set()
    for name in hashlib.algorithms_available:
        try:
            if hashlib.new(name, usedforsecurity=False).digest_size:
                usable.add(name)
        except ValueError:  # listed by OpenSSL yet disabled, as md4 is under OpenSSL 3
            continue
    return frozenset(usable)


class _Ring(NamedTuple):
    """One state of a ring; a change builds a new one, so readers never see half of it."""

    points: list[int]  # sorted
    owners: dict[int, Node]  # point → node
    weights: dict[Node, int]
    names: dict[bytes, Node]  # hashed name → node: "a" and b"a" are the same name


def _name(node: Node) -> bytes:
    """What is hashed for a node: a str's UTF-8 encoding, bytes as they are."""
    if isinstance(node, str):
        return node.encode("utf-8")
    if isinstance(node, bytes):
        return node
    raise TypeError(f"a hash ring node must be str or bytes, not {type(node).__name__}")


def _count(what: str, value: int, least: int) -> int:
    """``value`` if it is an int of at least ``least``; else a TypeError or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < least:
        raise ValueError(f"{what} must be at least {least}, not {value}")
    return value


class HashRing:
    """Map keys onto nodes by consistent hashing, exactly as tooz 9.1's ``HashRing`` does.

    Each node gets ``partitions * weight`` points on the ring; a key belongs to the node of
    the first point after the key's hash, and its replicas to the next distinct nodes
    clockwise. Adding or removing a node moves only the keys of that node's points.

    - Nodes are ``str`` or ``bytes``; a ``str`` is hashed as UTF-8, so a ring refuses to hold
      both ``"a"`` and ``b"a"`` (``ValueError``).
    - Keys are ``bytes``-like, or ``str`` (hashed as UTF-8, which tooz callers do by hand).
    - A weight is an int ≥ 0 (default 1): 1, 2, 3 take 1/6, 1/3, 1/2 of the keys; a node of
      weight 0 is listed in ``nodes`` but is given no keys.
    - The hash function is a name from :func:`hash_functions` (``ValueError`` otherwise).
    - Reads and changes may come from several threads; each read sees one whole state.
    """

    DEFAULT_PARTITION_NUMBER = 2**5
    DEFAULT_HASH_FUNCTION = "md5"

    def __init__(self, nodes: Iterable[Node] = (), partitions: int = DEFAULT_PARTITION_NUMBER,
                 hash_function: str = DEFAULT_HASH_FUNCTION) -> None:
        """A ring of ``nodes``, each of weight 1, with ``partitions`` points per unit of weight."""
        if hash_function not in hash_functions():
            raise ValueError(f"hash function {hash_function!r} is not supported here; "
                             f"use one of {', '.join(sorted(hash_functions()))}")
        self._partitions = _count("partitions", partitions, 1)
        self._hash_function = hash_function
        self._ring = _Ring([], {}, {}, {})
        self._changing = threading.Lock()
        self.add_nodes(set(nodes))

    @property
    def partitions(self) -> int:
        """Points per unit of weight."""
        return self._partitions

    @property
    def hash_function(self) -> str:
        """The hashlib name that hashes nodes and keys."""
        return self._hash_function

    @property
    def nodes(self) -> Mapping[Node, int]:
        """The nodes and their weights (a read-only view of the ring as it is now)."""
        return types.MappingProxyType(self._ring.weights)

    def add_node(self, node: Node, weight: int = 1) -> None:
        """Add ``node`` with ``weight``, or give a node already held this weight."""
        self.add_nodes((node,), weight)

    def add_nodes(self, nodes: Iterable[Node], weight: int = 1) -> None:
        """Add each of ``nodes`` with ``weight``; nothing changes if one of them is refused."""
        _count("weight", weight, 0)
        batch = {node: _name(node) for node in nodes}
        with self._changing:
            ring = self._ring
            names = dict(ring.names)
            for node, name in batch.items():
                holder = names.setdefault(name, node)
                if type(holder) is not type(node):  # the same name: "a" and b"a"
                    raise ValueError(f"nodes {holder!r} and {node!r} hash alike: "
                                     f"a ring holds one of them")
            owners, weights = dict(ring.owners), dict(ring.weights)
            for node, name in batch.items():
                # tooz keeps the surplus points of a lowered weight; conch gives them back.
                held = max(weight, weights.get(node, 0))
                for index, point in enumerate(self._points(name, held)):
                    if index < weight * self._partitions:
                        owners[point] = node
                    else:
                        del owners[point]
                weights[node] = weight
            self._ring = _Ring(sorted(owners), owners, weights, names)

    def remove_node(self, node: Node) -> None:
        """Remove ``node``; :class:`conch.UnknownNode` if the ring does not hold it."""
        with self._changing:
            ring = self._ring
            if node not in ring.weights:
                raise UnknownNode(node)
            owners, weights, names = dict(ring.owners), dict(ring.weights), dict(ring.names)
            name = _name(node)
            for point in self._points(name, weights.pop(node)):
                del owners[point]
            del names[name]
            self._ring = _Ring(sorted(owners), owners, weights, names)

    def get_nodes(self, data: Key, ignore_nodes: Iterable[Node] | None = None,
                  replicas: int = 1) -> set[Node]:
        """The nodes ``data`` maps onto: its owner and replicas, skipping ``ignore_nodes``.

        At most ``replicas`` (≥ 1) nodes; fewer when fewer nodes of weight > 0 are left.
        """
        _count("replicas", replicas, 1)
        key_hash = self._hash(data.encode("utf-8") if isinstance(data, str) else data)
        ring = self._ring
        ignored = set(ignore_nodes or ())
        wanted = min(replicas, sum(1 for node, weight in ring.weights.items()
                                   if weight and node not in ignored))
        found: set[Node] = set()
        start = bisect.bisect_right(ring.points, key_hash)
        # ``wanted`` distinct nodes are on the ring, so one turn round it finds them all.
        for step in range(len(ring.points) if wanted else 0):
            node = ring.owners[ring.points[(start + step) % len(ring.points)]]
            if node not in ignored:
                found.add(node)
                if len(found) == wanted:
                    break
        return found

    def __getitem__(self, data: Key) -> set[Node]:
        """``get_nodes(data)``: the owner of ``data``, in a set."""
        return self.get_nodes(data)

    def __len__(self) -> int:
        """The number of points on the ring (``partitions`` times the sum of the weights)."""
        return len(self._ring.points)

    def __repr__(self) -> str:
        return (f"HashRing({len(self._ring.weights)} nodes, {len(self)} points, "
                f"partitions={self._partitions}, hash_function={self._hash_function!r})")

    def _hash(self, data: bytes | bytearray | memoryview) -> int:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a hash ring key must be str or bytes, not {type(data).__name__}")
        return int.from_bytes(hashlib.new(self._hash_function, data,
                                          usedforsecurity=False).digest(), "big")

    def _points(self, name: bytes, weight: int) -> Iterator[int]:
        """A node's points: the hashes of its name repeated 2, 3, … times (tooz's chain)."""
        chain = hashlib.new(self._hash_function, name, usedforsecurity=False)
        for _ in range(weight * self._partitions):
            chain.update(name)
            yield int.from_bytes(chain.digest(), "big")
