"""asyncio for ``file://``: the blocking handle's tries (:class:`.lock.LockFile`), with
waits for the same inotify events read on the event loop: no thread, no polling. Each
loop shares one inotify instance while some acquire waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator

from conch.backends.base import AsyncLockHandle, Deadline
from conch.backends.file.inotify import idle
from conch.backends.file.lock import LockFile


class FileAsyncLock(AsyncLockHandle):
    """A :class:`LockFile`'s hold, taken on the event loop."""

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
        self.file.close()  # closing the descriptor frees the flock, from any thread


async def _wait(file: LockFile, deadline: Deadline) -> None:
    """Try ``file`` again on each ``FREED`` event until it holds or ``deadline`` passes."""
    loop = asyncio.get_running_loop()
    freed: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not freed.done():
            freed.set_result(None)

    with _watcher(loop) as watcher, watcher.watching(file, wake):
        while file.try_take() is None:  # watch first, then retry: no wakeup is missed
            remaining = deadline.remaining()
            if remaining == 0:
                return
            # Not asyncio.wait_for: before Python 3.12 it may swallow a cancellation.
            timer = None if remaining is None else loop.call_later(remaining, wake)
            try:
                await freed
            finally:
                if timer is not None:
                    timer.cancel()
            freed = loop.create_future()


class _Watcher:
    """An event loop's inotify instance: calls the wakers of each watch that has events."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._inotify = idle.borrow()
        self._wakers: dict[int, list[Callable[[], None]]] = {}  # by watch descriptor
        self.users = 0
        loop.add_reader(self._inotify.fileno(), self._dispatch)

    @contextlib.contextmanager
    def watching(self, file: LockFile, wake: Callable[[], None]) -> Iterator[None]:
        """Call ``wake()`` on the ``FREED`` events of the file ``file`` has open (the
        file it moves to, once swept)."""
        wd = self._add(file.fd, wake)

        def moved(fd: int) -> None:
            nonlocal wd
            new = self._add(fd, wake)
            self._remove(wd, wake)
            wd = new

        file.on_open = moved
        try:
            yield
        finally:
            file.on_open = None
            self._remove(wd, wake)

    def close(self) -> None:
        self._loop.remove_reader(self._inotify.fileno())  # nothing when the loop is closed
        idle.give_back(self._inotify, ())  # its watches are removed with their waiters

    def _add(self, fd: int, wake: Callable[[], None]) -> int:
        # One file watched twice (two waiters of this loop) is one watch descriptor.
        wd = self._inotify.watch_freed(fd)
        self._wakers.setdefault(wd, []).append(wake)
        return wd

    def _remove(self, wd: int, wake: Callable[[], None]) -> None:
        wakers = self._wakers[wd]
        wakers.remove(wake)
        if not wakers:
            del self._wakers[wd]
            with contextlib.suppress(OSError):  # gone with its file already
                self._inotify.rm_watch(wd)

    def _dispatch(self) -> None:
        woken = {event.wd for event in self._inotify.read()}
        if -1 in woken:  # the queue overflowed: any file may have been freed
            woken = set(self._wakers)
        for wd in woken:
            for wake in list(self._wakers.get(wd, ())):
                wake()


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watcher] = \
    weakref.WeakKeyDictionary()
_watchers_mutex = threading.Lock()  # several loops, on their threads, share the registry


@contextlib.contextmanager
def _watcher(loop: asyncio.AbstractEventLoop) -> Iterator[_Watcher]:
    """``loop``'s watcher, opened by its first user and closed by its last."""
    with _watchers_mutex:
        watcher = _watchers.get(loop)
        if watcher is None:
            watcher = _watchers[loop] = _Watcher(loop)
        watcher.users += 1
    try:
        yield watcher
    finally:
        with _watchers_mutex:
            watcher.users -= 1
            unused = not watcher.users
            if unused:
                del _watchers[loop]
        if unused:
            watcher.close()
