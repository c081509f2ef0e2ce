"""The ``memory://`` asyncio handle: a :class:`.lock.MemoryLock`'s hold, awaited."""

from __future__ import annotations

import asyncio
import contextlib

from conch.backends.base import AsyncLockHandle, Deadline
from conch.backends.memory.lock import MemoryLock


class MemoryAsyncLock(AsyncLockHandle):
    def __init__(self, lock: MemoryLock) -> None:
        self._lock = lock

    async def acquire(self, deadline: Deadline) -> int | None:
        loop = asyncio.get_running_loop()
        freed = asyncio.Event()

        def wake() -> None:  # from any thread; nothing once the loop is closed
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(freed.set)

        try:
            while (token := self._lock.try_take(wake)) is None:
                remaining = deadline.remaining()
                if remaining == 0:
                    return None
                # Not asyncio.wait_for: before Python 3.12 it may swallow a cancellation.
                timer = None if remaining is None else loop.call_later(remaining, freed.set)
                try:  # cancelled here, nothing is held
                    await freed.wait()
                finally:
                    if timer is not None:
                        timer.cancel()
                freed.clear()  # before the next try, which sees any release after this
            return token
        finally:
            self._lock.stop_waiting(wake)

    async def release(self) -> None:
        self._lock.release()

    def abandon(self) -> None:
        self._lock.release()
