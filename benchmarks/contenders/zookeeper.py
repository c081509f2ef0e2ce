"""ZooKeeper: conch ``zookeeper://`` against tooz's zookeeper driver and kazoo's Lock recipe.

Every contender waits with a timeout (``acquire(blocking=60)``; kazoo:
``acquire(timeout=60)``), as the issue measures.

* **conch**: an ephemeral sequential znode per acquire (``create2``, whose reply
  carries the fencing token) and one ``get_children``, pipelined; a waiter watches only
  its predecessor, and takes the lock when it sees the deletion of the only child
  before its own. Release deletes the znode. One session per coordinator.
* **kazoo Lock** (``client.Lock(path)``): the same queue of ephemeral sequential
  znodes; its acquire also checks the lock path exists on first use.
* **tooz** wraps kazoo's Lock (``get_lock``), adding little of its own.
* **floor**: one ephemeral znode per name, ``create`` to take (on ``NodeExists``
  watch it with ``exists`` and try again when it is deleted) and ``delete`` to give
  back: one request each way, but every waiter wakes at each release (a herd),
  and there is no queue, no fairness and no token.

The server keeps ``forceSync`` on (unlike the tests'), as in production: every
contender writes the transaction log twice per cycle (create, delete).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import NodeExistsError  # type: ignore[import-untyped]
from tests.servers.zookeeper import ZooKeeperServer

from benchmarks.contenders import common
from benchmarks.contenders.base import Contender, LockLike, Settings, Target
from conch.url import parse_url

WAIT_S = 60
"""Every contender's timed wait, in seconds."""

# Contended runs of 6 s in all (3 blocks of 2 s), not 2: a cycle costs two log syncs
# (~5 ms), so a short run counts only a few hundred acquisitions.
SETTINGS = Settings(duration_s=6.0)

# The goals (issue 13).
TARGETS = (
    Target("hand-off p50 ≤ kazoo Lock's (both wake on a watch of the predecessor)",
           "handoff p50", "conch", 1.0, peer="kazoo Lock"),
    Target("uncontended p50 ≤ kazoo Lock's (create + get_children, then delete, each)",
           "uncontended p50", "conch", 1.0, peer="kazoo Lock"),
    *(Target(f"contended throughput ≥ kazoo Lock's ({count} processes)",
             f"throughput {count}", "conch", 1.0, higher_is_better=True, peer="kazoo Lock")
      for count in (2, 4, 8)),
)


@contextmanager
def target() -> Iterator[str]:
    """A ZooKeeper of the test harness (fsync on), stopped by PID afterwards."""
    server = ZooKeeperServer(durable=True)
    try:
        server.launch()
        yield server.url(chroot="/bench")
    finally:
        server.cleanup()


def _hosts(url: str) -> str:
    return ",".join(f"{host}:{port}" for host, port in parse_url(url).hosts)




class Conch(common.Conch):
    """conch with ``acquire(blocking=WAIT_S)``."""

    def lock(self, name: str) -> LockLike:
        return common.TimedWait(super().lock(name), blocking=WAIT_S)


class Tooz(common.Tooz):
    """tooz's ``zookeeper://`` driver: a started coordinator's ``get_lock``."""

    def tooz_url(self) -> str:
        return f"zookeeper://{_hosts(self.target)}"

    def lock(self, name: str) -> LockLike:
        return common.TimedWait(super().lock(name), blocking=WAIT_S)


class _Client(Contender):
    """A contender on a plain started kazoo client."""

    def setup(self) -> None:
        self._client = KazooClient(_hosts(self.target))
        self._client.start(timeout=10)
        self._root = parse_url(self.target).path
        self._client.ensure_path(self._root)

    def teardown(self) -> None:
        self._client.stop()
        self._client.close()


class KazooLock(_Client):
    """kazoo's ``Lock`` recipe with its defaults."""

    name = "kazoo Lock"
    distribution = "kazoo"

    def lock(self, name: str) -> LockLike:
        return common.TimedWait(self._client.Lock(f"{self._root}/kazoo-{name}", "bench"),
                                timeout=WAIT_S)


class _EphemeralNode:
    """One ephemeral znode is the lock: create to take it, delete to give it back."""

    def __init__(self, client: Any, path: str) -> None:
        self._client = client
        self._path = path
        self._freed = threading.Event()

    def acquire(self) -> bool:
        while True:
            try:
                self._client.create(self._path, ephemeral=True, makepath=True)
                return True
            except NodeExistsError:
                self._freed.clear()
                if self._client.exists(self._path, watch=lambda _: self._freed.set()):
                    self._freed.wait()

    def release(self) -> None:
        self._client.delete(self._path)


class BareEphemeralNode(_Client):
    """The floor: one request to take (uncontended), one to give back."""

    name = "bare create/delete"
    distribution = "kazoo"
    floor = True

    def lock(self, name: str) -> LockLike:
        return _EphemeralNode(self._client, f"{self._root}/floor-{name}")


CONTENDERS: tuple[type[Contender], ...] = (Conch, Tooz, KazooLock, BareEphemeralNode)
