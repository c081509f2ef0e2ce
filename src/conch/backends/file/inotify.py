"""Linux inotify through ``ctypes`` (no client library works under eventlet: see
docs/file.md), the process's idle instances, and the watch a waiter puts on a lock file.
Waits block in :class:`~conch.backends.kit.socket_wait.SocketWait`: green under eventlet.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import threading
import time
from collections.abc import Iterable
from typing import NamedTuple

from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.socket_wait import SocketWait
from conch.errors import BackendUnavailable

# Event bits, as in <sys/inotify.h> without the IN_ prefix.
ATTRIB, CLOSE_WRITE, MOVED_FROM, DELETE = 0x4, 0x8, 0x40, 0x200
DELETE_SELF, MOVE_SELF, IGNORED = 0x400, 0x800, 0x8000
FREED = CLOSE_WRITE | ATTRIB
"""After these a waiter tries again: every description of a lock file is opened for
writing, so the close of the holder's (a release, or the kernel closing a dead
holder's files) is a ``CLOSE_WRITE``; an unlink (a sweep) changes the link count."""

IDLE_INSTANCES = 8
"""Instances kept for the next waits: closing one whose watch was removed waits for a
kernel grace period, which a waiter that just got its lock would wait for."""

_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
_libc = ctypes.CDLL(None, use_errno=True)


class Event(NamedTuple):
    """One event: its watch (-1: the queue overflowed), its mask, the file's name in a
    watched directory."""

    wd: int
    mask: int
    name: str


class Inotify:
    """A non-blocking inotify instance."""

    __slots__ = ("_buffer", "_readable", "fd")

    def __init__(self) -> None:
        self.fd: int = _call(_libc.inotify_init1, os.O_NONBLOCK | os.O_CLOEXEC)
        self._buffer = bytearray(64 * 1024)  # room for many events, and a longest name
        self._readable: SocketWait | None = None

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path`` for ``mask``; the watch descriptor (one per file, watched twice)."""
        return _call(_libc.inotify_add_watch, self.fd, os.fsencode(path), mask)

    def watch_freed(self, fd: int) -> int:
        """Watch the file open as ``fd`` for :data:`FREED` (even once it is unlinked)."""
        return self.add_watch(f"/proc/self/fd/{fd}", FREED)

    def rm_watch(self, wd: int) -> None:
        """Stop watch ``wd`` (``OSError`` when it went with its file)."""
        _call(_libc.inotify_rm_watch, self.fd, wd)

    def read(self) -> list[Event]:
        """The events queued now, without waiting (``os.readv``: eventlet's green
        ``os.read`` would wait for readability first)."""
        try:
            size = os.readv(self.fd, [self._buffer])
        except BlockingIOError:
            return []
        events, data, offset = [], memoryview(self._buffer)[:size], 0
        while offset < size:
            wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
            offset += _EVENT_HEADER.size + length
            name = bytes(data[offset - length:offset]).split(b"\0", 1)[0]
            events.append(Event(wd, mask, os.fsdecode(name)))
        return events

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: forever); whether events are queued."""
        if self._readable is None:
            self._readable = SocketWait(self.fd)
        return self._readable.until(None if timeout is None else time.monotonic() + timeout)

    def close(self) -> None:
        os.close(self.fd)


class _IdleInstances:
    """The process's instances without watches, kept for the next waits."""

    def __init__(self) -> None:
        self.instances: list[Inotify] = []
        self._mutex = threading.Lock()
        forget_in_child(self)

    def borrow(self) -> Inotify:
        """An instance for a wait, or :class:`BackendUnavailable` when the user has none left."""
        with self._mutex:
            if self.instances:
                return self.instances.pop()
        try:
            return Inotify()
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
        raise BackendUnavailable("no inotify instance left for a wait; "
                                 "raise fs.inotify.max_user_instances")

    def give_back(self, instance: Inotify, watches: Iterable[int]) -> None:
        """The wait is over: remove its ``watches`` and keep ``instance`` if few are idle."""
        for wd in watches:
            with contextlib.suppress(OSError):  # removed already: its file is gone
                instance.rm_watch(wd)
        while instance.read():  # drop the events left, such as those of the removal
            pass
        with self._mutex:
            if len(self.instances) < IDLE_INSTANCES:
                self.instances.append(instance)
                return
        instance.close()

    def forget_parent(self) -> None:
        # The child shares the parent's instances: it must not read their events.
        self._mutex = threading.Lock()
        while self.instances:
            self.instances.pop().close()


idle = _IdleInstances()


def _call(function: ctypes._NamedFuncPointer, *args: object) -> int:
    """Call ``function``; its result, or ``OSError`` for -1 (retried on ``EINTR``)."""
    while True:
        result = int(function(*args))
        if result != -1:
            return result
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))
