"""``memory://[name]``: locks inside this process, for tests and examples.

Every coordinator of the process with the same URL shares one store, as if it
were a server. A waiter sleeps on the name's condition variable, or (asyncio) on
a future, and is woken by the release (or, sync, by its coordinator's close).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable

from conch.backends.base import AsyncLockHandle, Backend, Deadline, LockHandle, LossCallback
from conch.capabilities import Capabilities
from conch.errors import LockLost
from conch.introspection import HOST, HolderChanged, HolderInfo, LockInfo
from conch.url import BackendURL


class _Name:
    """One name's holder and the waiters to wake when it is freed."""

    def __init__(self, mutex: threading.Lock) -> None:
        self.holder: _MemoryLock | None = None
        self.holder_info: HolderInfo | None = None
        self.waiters = 0
        self.freed = threading.Condition(mutex)
        self.wakers: list[Callable[[], None]] = []  # of async waiters, called when freed


class _Store:
    """The state a server would keep: the names in use and one token counter."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.tokens = itertools.count(1)
        self.names: dict[bytes, _Name] = {}


_stores: dict[str, _Store] = {}
_stores_mutex = threading.Lock()


class MemoryBackend(Backend):
    """Locks shared by the coordinators of one process."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True,
        shared_locks=False, distributed=False, introspection=True, breakable=True,
        native_async=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        url.options(())
        store_name = ",".join(host for host, _ in url.hosts) + url.path
        with _stores_mutex:
            self._store = _stores.setdefault(store_name, _Store())
        self._closed = threading.Event()

    def connect(self) -> None:
        pass

    def close(self) -> None:
        with self._store.mutex:
            self._closed.set()
            # Other coordinators' waiters just wake and sleep again.
            for name in self._store.names.values():
                name.freed.notify_all()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return _MemoryLock(self._store, key, self.member_id, on_lost, self._closed)

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        return _MemoryAsyncLock(_MemoryLock(self._store, key, self.member_id, on_lost,
                                            self._closed))

    def describe_lock(self, key: bytes) -> LockInfo:
        with self._store.mutex:
            name = self._store.names.get(key)
            if name is None:
                return LockInfo(key, None, 0)
            return LockInfo(key, name.holder_info, name.waiters)

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        with self._store.mutex:
            return [LockInfo(key, name.holder_info, name.waiters)
                    for key, name in self._store.names.items()]

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        with self._store.mutex:
            name = self._store.names.get(key)
            if name is None or name.holder is None:
                if token is not None:
                    raise HolderChanged(f"lock {key!r} is no longer held")
                return LockInfo(key, None, 0)
            broken = LockInfo(key, name.holder_info, name.waiters)
            if token is not None and (name.holder_info is None
                                      or name.holder_info.token != token):
                raise HolderChanged(f"lock {key!r} is held by another hold than token {token}")
            holder = name.holder
            holder.free(name)
        holder.on_lost("the lock was broken (conch break)")
        return broken


class _MemoryLock(LockHandle):
    def __init__(self, store: _Store, key: bytes, member_id: str, on_lost: LossCallback,
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

    def entry(self) -> _Name:
        """This lock's name in the store (the store's mutex is held)."""
        names = self._store.names
        name = names.get(self._key)
        if name is None:
            name = names[self._key] = _Name(self._store.mutex)
        return name

    def take(self, name: _Name) -> int:
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

    def free(self, name: _Name) -> None:
        """Free ``name``, held by this lock, and wake a waiter (the store's mutex is held)."""
        name.holder = name.holder_info = None
        name.freed.notify()
        wakers, name.wakers = name.wakers, []
        for wake in wakers:
            wake()
        self.forget_if_unused(name)

    def forget_if_unused(self, name: _Name) -> None:
        """Drop ``name`` from the store when nobody holds or awaits it (mutex held)."""
        if name.holder is None and name.waiters == 0:
            del self._store.names[self._key]


class _MemoryAsyncLock(AsyncLockHandle):
    """The same hold as :class:`_MemoryLock`; an async waiter awaits a future the release sets."""

    def __init__(self, lock: _MemoryLock) -> None:
        self._lock = lock

    async def acquire(self, deadline: Deadline) -> int | None:
        lock, loop = self._lock, asyncio.get_running_loop()
        while True:
            freed: asyncio.Future[None] = loop.create_future()
            with lock._store.mutex:
                name = lock.entry()
                if name.holder is None:
                    return lock.take(name)
                remaining = deadline.remaining()
                if remaining == 0:
                    return None
                wake = _waker(loop, freed)
                name.wakers.append(wake)
                name.waiters += 1
            # Not asyncio.wait_for: before Python 3.12 it may swallow a cancellation.
            timer = None if remaining is None else loop.call_later(remaining, _set, freed)
            try:  # cancelled here, nothing is held
                await freed
            finally:
                if timer is not None:
                    timer.cancel()
                with lock._store.mutex:
                    name.waiters -= 1
                    if wake in name.wakers:
                        name.wakers.remove(wake)
                    lock.forget_if_unused(name)

    async def release(self) -> None:
        self._lock.release()

    def abandon(self) -> None:
        self._lock.release()


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _waker(loop: asyncio.AbstractEventLoop, freed: asyncio.Future[None]) -> Callable[[], None]:
    """Sets ``freed`` on its loop, from any thread (nothing if that loop is closed)."""

    def wake() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_set, freed)

    return wake
