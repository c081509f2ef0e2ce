"""Linux inotify for ``file://``: the three system calls, and waiting for events.

conch calls ``inotify_init1``, ``inotify_add_watch`` and ``inotify_rm_watch``
through ``ctypes`` itself rather than through a client library, for two reasons
that matter under eventlet (Cinder, Manila and Tacker monkey-patch first):
``inotify_simple`` imports ``select.poll`` at module level, which green ``select``
lacks, and eventlet's green ``os.read`` waits for readability before reading any
descriptor that is not a regular file, so a read that should return at once
would suspend. Events are read with ``os.readv``, which eventlet leaves alone.

:meth:`Inotify.wait` is where a ``file://`` wait blocks (but for a forever
wait's ``flock`` in a plain process), through :class:`~conch.backends.kit.socket_wait.SocketWait`:
``poll`` in a plain process, eventlet's green ``select`` in a monkey-patched one, so the
other green threads run meanwhile.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from typing import NamedTuple

from conch.backends.kit.socket_wait import SocketWait

CLOSE_WRITE = 0x8
ATTRIB = 0x4
MOVED_FROM = 0x40
DELETE = 0x200
DELETE_SELF = 0x400
MOVE_SELF = 0x800
Q_OVERFLOW = 0x4000
IGNORED = 0x8000
"""Event bits, as in ``<sys/inotify.h>`` without the ``IN_`` prefix."""

_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
_READ_SIZE = 64 * 1024  # many events, and always room for one with the longest name
_libc = ctypes.CDLL(None, use_errno=True)


class Event(NamedTuple):
    """One inotify event: the watch it came from (-1: the queue overflowed), what
    happened, and the name of the file for a watched directory's events."""

    wd: int
    mask: int
    name: str


class Inotify:
    """A non-blocking inotify instance."""

    __slots__ = ("_buffer", "_readable", "fd")

    def __init__(self) -> None:
        self.fd: int = _call(_libc.inotify_init1, os.O_NONBLOCK | os.O_CLOEXEC)
        self._buffer = bytearray(_READ_SIZE)
        self._readable: SocketWait | None = None  # made by the first wait

    def fileno(self) -> int:
        """The instance's descriptor."""
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path`` for the events of ``mask``; the watch descriptor (the same one
        for a file watched twice)."""
        return _call(_libc.inotify_add_watch, self.fd, os.fsencode(path), mask)

    def rm_watch(self, wd: int) -> None:
        """Stop watch ``wd`` (``OSError`` when it is gone already, with its file)."""
        _call(_libc.inotify_rm_watch, self.fd, wd)

    def read(self) -> list[Event]:
        """The events queued now, without waiting."""
        try:
            size = os.readv(self.fd, [self._buffer])
        except BlockingIOError:
            return []
        events = []
        data = memoryview(self._buffer)[:size]
        offset = 0
        while offset < size:
            wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
            raw = bytes(data[offset + _EVENT_HEADER.size:offset + _EVENT_HEADER.size + length])
            events.append(Event(wd, mask, os.fsdecode(raw.split(b"\0", 1)[0])))
            offset += _EVENT_HEADER.size + length
        return events

    def wait(self, timeout: float | None) -> bool:
        """Wait until events are queued or ``timeout`` seconds (``None``: forever) pass;
        whether events are queued. Green (through eventlet's hub) in a monkey-patched
        process."""
        if self._readable is None:
            self._readable = SocketWait(self.fd)
        return self._readable.until(None if timeout is None else time.monotonic() + timeout)

    def close(self) -> None:
        """Close the instance (with its watches)."""
        os.close(self.fd)


def _call(function: ctypes._NamedFuncPointer, *args: object) -> int:
    """Call ``function``; its result, or ``OSError`` for -1 (retried on ``EINTR``)."""
    while True:
        result = int(function(*args))
        if result != -1:
            return result
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))
