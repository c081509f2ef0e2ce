"""asyncio for ``file://``: :class:`.lock.LockFile`'s tries, waiting for its inotify events
on the event loop (one instance per loop)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Iterator

from conch.backends.base import AsyncLockHandle, Deadline
from conch.backends.file import inotify
from conch.backends.file.lock import LockFile


class FileAsyncLock(AsyncLockHandle):
    def __init__(self, file: LockFile) -> None:
        self.file = file

    async def acquire(self, deadline: Deadline) -> int | None:
        with self.file.attempt() as file:  # a cancelled wait closes the descriptor
            if file.try_take() is None and not deadline.expired():
                await _wait(file, deadline)
        return file.token

    async def release(self) -> None:
        self.file.release()

    def abandon(self) -> None:
        self.file.close()


async def _wait(file: LockFile, deadline: Deadline) -> None:
    loop = asyncio.get_running_loop()
    freed: asyncio.Future[None] = loop.create_future()

    def wake(*_event: int) -> None:
        if not freed.done():
            freed.set_result(None)

    with _watching(loop, file, wake):
        for remaining in file.waits(deadline):
            # Not asyncio.wait_for: before Python 3.12 it may swallow a cancellation.
            timer = None if remaining is None else loop.call_later(remaining, wake)
            try:
                await freed
            finally:
                if timer is not None:
                    timer.cancel()
            freed = loop.create_future()


# Each event loop's instance and its number of waits.
_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[inotify.Watches, int]] = \
    weakref.WeakKeyDictionary()
_watchers_mutex = threading.Lock()  # loops on several threads share the registry


@contextlib.contextmanager
def _watching(loop: asyncio.AbstractEventLoop, file: LockFile,
              wake: inotify.Callback) -> Iterator[None]:
    """Call ``wake`` on ``file``'s events, through its loop's instance."""
    with _watchers_mutex:
        watcher, users = _watchers.get(loop) or (inotify.Watches(inotify.borrow()), 0)
        _watchers[loop] = watcher, users + 1
        if not users:
            loop.add_reader(watcher.inotify.fd, watcher.dispatch)
    watches: list[int] = []
    try:
        file.watch(lambda fd: watches.append(watcher.add(inotify.opened(fd), inotify.FREED, wake)))
        yield
    finally:
        file.watch(None)
        for wd in watches:
            watcher.remove(wd, wake)
        with _watchers_mutex:
            watcher, users = _watchers.pop(loop)
            if users > 1:
                _watchers[loop] = watcher, users - 1
        if users == 1:
            loop.remove_reader(watcher.inotify.fd)  # nothing when the loop is closed
            inotify.give_back(watcher.inotify, [])  # its watches went with their waiters
