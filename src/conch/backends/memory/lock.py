"""``memory://`` locks: a store per URL keeps what a server would (holders, waiters, one
token counter). Both handles try through :meth:`MemoryLock.try_take` and wait for the
waker it registered, which a release calls: this blocking handle's event, or the
asyncio handle's future (``async_lock.py``)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.errors import LockLost
from conch.introspection import HOST, HolderInfo


@dataclasses.dataclass
class Name:
    """One name's holder and its waiters' wakers (under the store's mutex)."""

    holder: MemoryLock | None = None
    holder_info: HolderInfo | None = None
    wakers: list[Callable[[], object]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Store:
    """The names in use of one ``memory://`` URL."""

    mutex: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    names: dict[bytes, Name] = dataclasses.field(default_factory=dict)
    tokens: Iterator[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    def free(self, key: bytes, name: Name) -> None:  # mutex held: waiters wake, try again
        name.holder = name.holder_info = None
        for wake in name.wakers:
            wake()
        self.forget_if_unused(key, name)

    def forget_if_unused(self, key: bytes, name: Name) -> None:
        if name.holder is None and not name.wakers:
            del self.names[key]


class MemoryLock(LockHandle):
    """The blocking handle, whose hold the asyncio handle shares."""

    def __init__(self, store: Store, key: bytes, member_id: str, on_lost: LossCallback,
                 closed: threading.Event) -> None:  # closed: the backend's, set by its close
        self.store, self.key, self.member_id, self.on_lost = store, key, member_id, on_lost
        self.closed = closed

    def try_take(self, waker: Callable[[], object]) -> int | None:
        """Hold the name if it is free: the token; else ``None``, and ``waker`` is called
        when the name is freed (until :meth:`stop_waiting`)."""
        with self.store.mutex:
            name = self.store.names.setdefault(self.key, Name())
            if name.holder is not None:
                if waker not in name.wakers:
                    name.wakers.append(waker)
                return None
            name.holder, token = self, next(self.store.tokens)
            name.holder_info = HolderInfo(member_id=self.member_id, host=HOST, pid=os.getpid(),
                                          acquired_at=time.time(), token=token)
            return token

    def stop_waiting(self, waker: Callable[[], object]) -> None:
        with self.store.mutex:
            name = self.store.names.get(self.key)
            if name is not None and waker in name.wakers:
                name.wakers.remove(waker)
                self.store.forget_if_unused(self.key, name)

    def acquire(self, deadline: Deadline) -> int | None:
        woken = threading.Event()
        try:
            while (token := self.try_take(woken.set)) is None:
                remaining = deadline.remaining()
                if remaining == 0 or self.closed.is_set():
                    return None
                woken.wait(remaining)
                woken.clear()  # before the next try, which sees any release after this
            return token
        finally:
            self.stop_waiting(woken.set)

    def release(self) -> None:
        with self.store.mutex:
            name = self.store.names.get(self.key)
            if name is None or name.holder is not self:  # broken; its report may be on its way
                raise LockLost("the lock was broken (conch break) before its release")
            self.store.free(self.key, name)
