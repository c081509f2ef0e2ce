"""The name queues of one :class:`~conch.aio.AsyncCoordinator`: one per event loop, lock
name, coordinator start and owner, made on first use; idle ones are kept (the last
:data:`IDLE_QUEUES`) with their lock objects, so a name used again and again does not make
them anew each time."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Any

from conch.aio.native import TaskCalls, native_lock
from conch.aio.queue import NameQueue
from conch.aio.threads import ThreadCalls
from conch.coordinator import Coordinator
from conch.errors import NotStarted
from conch.hold_kinds import OpenHandle
from conch.lock import LockName

# A queue's event loop, lock name, coordinator start (its Membership) and owner (None: the
# name's exclusive holds, shared by the lock objects; else the one lock object it serves).
_Where = tuple[asyncio.AbstractEventLoop, bytes, object, object]
IDLE_QUEUES = 64
"""Idle name queues an AsyncCoordinator keeps for reuse (the least recently used go)."""


class QueueTable:
    """The queues of one coordinator; any thread may forget one."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator
        self._queues: dict[_Where, NameQueue[Any]] = {}
        self._idle: OrderedDict[_Where, None] = OrderedDict()
        self._mutex = threading.Lock()

    def take_all(self) -> list[NameQueue[Any]]:
        """Every queue, forgotten (the coordinator stops)."""
        with self._mutex:
            queues, self._queues = list(self._queues.values()), {}
            self._idle.clear()
        return queues

    def get(self, name: LockName, key: bytes, owner: object = None,
            open_handle: OpenHandle | None = None) -> NameQueue[Any]:
        """The queue of lock ``key`` (and ``owner``) on the running loop: natively async on a
        ``native_async`` backend (exclusive holds), else through conch's threads."""
        loop = asyncio.get_running_loop()
        sync = self._coordinator
        # Per start of the coordinator too: the lock objects a queue keeps belong to one.
        where = (loop, key, sync._membership, owner)
        with self._mutex:
            queue = self._queues.get(where)
            if queue is not None:
                self._idle.pop(where, None)
                return queue
            if not sync.is_started:
                raise NotStarted(f"{sync!r} is not started")
            if sync.capabilities.native_async and open_handle is None:
                queue = NameQueue(loop, lambda: native_lock(sync, name),
                                  TaskCalls(loop), lambda idle: self._forget(where, idle))
            else:
                queue = NameQueue(loop, lambda: sync._lock(name, metered=False,
                                                           open_handle=open_handle),
                                  ThreadCalls(loop), lambda idle: self._forget(where, idle))
            self._queues[where] = queue
            return queue

    def _forget(self, where: _Where, queue: NameQueue[Any]) -> None:
        with self._mutex:
            if self._queues.get(where) is not queue:
                return
            if where[0].is_closed():
                del self._queues[where]
                self._idle.pop(where, None)
                return
            self._idle[where] = None
            self._idle.move_to_end(where)
            if len(self._idle) > IDLE_QUEUES:
                oldest, _ = self._idle.popitem(last=False)
                del self._queues[oldest]
