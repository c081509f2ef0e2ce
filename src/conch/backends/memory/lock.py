"""``memory://`` locks: a store per URL keeps what a server would (docs/memory.md)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.kit.group_subscribers import GroupSubscribers
from conch.errors import LimitMismatch, LockLost
from conch.introspection import HOST, HolderInfo

EXCLUSIVE, SHARED = 0, -1  # a MemoryLock's limit, else a semaphore's permit count
SEMAPHORES = b"\0semaphore\0"  # what a semaphore's name starts with in the store


@dataclasses.dataclass
class Name:
    """One name's holders and its waiters' wakers, with their ``limit`` (store's mutex held)."""

    holders: dict[MemoryLock, HolderInfo] = dataclasses.field(default_factory=dict)
    wakers: dict[Callable[[], object], int] = dataclasses.field(default_factory=dict)

    def admits(self, lock: MemoryLock) -> bool:
        """Whether ``lock`` may hold now (:class:`LimitMismatch`: another semaphore limit)."""
        if lock.limit > 0:
            held = next(iter(self.holders), lock)  # the holders share one limit
            if held.limit != lock.limit:
                raise LimitMismatch(f"semaphore {lock.key.removeprefix(SEMAPHORES)!r} is in "
                                    f"use with limit {held.limit}, not {lock.limit}")
            return len(self.holders) < lock.limit
        if lock.limit == SHARED:
            return EXCLUSIVE not in self.wakers.values() and all(
                holder.limit == SHARED for holder in self.holders)
        return not self.holders


@dataclasses.dataclass
class Store:
    """One URL's names in use, token counter, and groups' entries by member id."""

    mutex: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    names: dict[bytes, Name] = dataclasses.field(default_factory=dict)
    tokens: Iterator[int] = dataclasses.field(default_factory=lambda: itertools.count(1))
    groups: dict[bytes, dict[str, bytes]] = dataclasses.field(default_factory=dict)
    group_subscribers: GroupSubscribers = dataclasses.field(default_factory=GroupSubscribers)

    def free(self, key: bytes, name: Name, holder: MemoryLock) -> None:  # mutex held
        del name.holders[holder]
        for wake in name.wakers:  # waiters wake and try again
            wake()
        self.forget_if_unused(key, name)

    def forget_if_unused(self, key: bytes, name: Name) -> None:
        if not name.holders and not name.wakers:
            del self.names[key]


class MemoryLock(LockHandle):
    """The blocking handle, whose hold the asyncio handle shares."""

    def __init__(self, store: Store, key: bytes, member_id: str, on_lost: LossCallback,
                 closed: threading.Event, limit: int = EXCLUSIVE) -> None:
        self.store, self.key, self.member_id, self.on_lost = store, key, member_id, on_lost
        self.closed, self.limit = closed, limit

    def try_take(self, waker: Callable[[], object]) -> int | None:
        """The token of a new hold; else ``None``, ``waker`` then called at each release of
        the name (until :meth:`stop_waiting`)."""
        with self.store.mutex:
            name = self.store.names.setdefault(self.key, Name())
            if not name.admits(self):
                name.wakers[waker] = self.limit
                return None
            token = next(self.store.tokens)
            name.holders[self] = HolderInfo(member_id=self.member_id, host=HOST,
                                            pid=os.getpid(), acquired_at=time.time(),
                                            token=token)
            return token

    def stop_waiting(self, waker: Callable[[], object]) -> None:
        with self.store.mutex:
            name = self.store.names.get(self.key)
            if name is not None and name.wakers.pop(waker, None) is not None:
                if self.limit == EXCLUSIVE:  # shared waiters it held back may go now
                    for wake in name.wakers:
                        wake()
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
            if name is None or self not in name.holders:  # broken; its report may be on its way
                raise LockLost("the lock was broken (conch break) before its release")
            self.store.free(self.key, name, self)
