"""The memory:// lock handle and the store it works on: one per URL in this process, the
state a server would keep (holders, waiters, one token counter)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.errors import LockLost
from conch.introspection import HOST, HolderInfo


class Name:
    """One name's holder and the waiters to wake when it is freed."""

    def __init__(self, mutex: threading.Lock) -> None:
        self.holder: MemoryLock | None = None
        self.holder_info: HolderInfo | None = None
        self.waiters = 0
        self.freed = threading.Condition(mutex)
        self.wakers: list[Callable[[], None]] = []  # of async waiters, called when freed


class Store:
    """The state a server would keep: the names in use and one token counter."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.tokens = itertools.count(1)
        self.names: dict[bytes, Name] = {}



class MemoryLock(LockHandle):
    """A lock object's hold of one name; a waiter sleeps on the name's condition variable,
    woken by the release or by its coordinator's close."""

    def __init__(self, store: Store, key: bytes, member_id: str, on_lost: LossCallback,
                 closed: threading.Event) -> None:
        self._store = store
        self._key = key
        self._member_id = member_id
        self.on_lost = on_lost
        self._closed = closed  # its backend's: set (and waiters woken) by close()

    def acquire(self, deadline: Deadline) -> int | None:
        with self._store.mutex:
            name = self.entry()
            while name.holder is not None:
                remaining = deadline.remaining()
                if remaining == 0 or self._closed.is_set():
                    return None
                name.waiters += 1
                try:
                    name.freed.wait(remaining)
                finally:
                    name.waiters -= 1
            return self.take(name)

    def entry(self) -> Name:
        """This lock's name in the store (the store's mutex is held)."""
        names = self._store.names
        name = names.get(self._key)
        if name is None:
            name = names[self._key] = Name(self._store.mutex)
        return name

    def take(self, name: Name) -> int:
        """Hold free ``name``; its token (the store's mutex is held)."""
        token = next(self._store.tokens)
        name.holder = self
        name.holder_info = HolderInfo(member_id=self._member_id, host=HOST,
                                      pid=os.getpid(), acquired_at=time.time(), token=token)
        return token

    def release(self) -> None:
        with self._store.mutex:
            name = self._store.names.get(self._key)
            if name is None or name.holder is not self:  # broken; its report may be on its way
                raise LockLost("the lock was broken (conch break) before its release")
            self.free(name)

    def free(self, name: Name) -> None:
        """Free ``name``, held by this lock, and wake a waiter (the store's mutex is held)."""
        name.holder = name.holder_info = None
        name.freed.notify()
        wakers, name.wakers = name.wakers, []
        for wake in wakers:
            wake()
        self.forget_if_unused(name)

    def forget_if_unused(self, name: Name) -> None:
        """Drop ``name`` from the store when nobody holds or awaits it (mutex held)."""
        if name.holder is None and name.waiters == 0:
            del self._store.names[self._key]
