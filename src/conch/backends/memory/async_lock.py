"""The memory:// asyncio handle: the same hold as :class:`MemoryLock`, awaited on a future
that the release sets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from conch.backends.base import AsyncLockHandle, Deadline
from conch.backends.memory.lock import MemoryLock


class MemoryAsyncLock(AsyncLockHandle):
    """The same hold as :class:`MemoryLock`; an async waiter awaits a future the release sets."""

    def __init__(self, lock: MemoryLock) -> None:
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
