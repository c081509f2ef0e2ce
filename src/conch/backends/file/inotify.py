"""Linux inotify (shared and idle instances; waits green under eventlet) and link checks,
through ``ctypes`` (docs/file.md)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import struct
import threading
import time
from collections.abc import Callable

from conch.backends.kit.socket_wait import SocketWait
from conch.errors import BackendUnavailable

ATTRIB, CLOSE_WRITE, MOVED_FROM, DELETE = 0x4, 0x8, 0x40, 0x200  # <sys/inotify.h>'s IN_*
DELETE_SELF, MOVE_SELF, Q_OVERFLOW, IGNORED = 0x400, 0x800, 0x4000, 0x8000
MOVED_TO, CREATE, MASK_ADD = 0x80, 0x100, 0x20000000
# A waiter tries again after these: the holder's close (release, death), a sweep's unlink.
FREED = CLOSE_WRITE | ATTRIB
IDLE_INSTANCES = 8  # kept: closing one that had watches waits for a kernel grace period

log = logging.getLogger("conch")

_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
_libc = ctypes.CDLL(None, use_errno=True)
_STATX_NLINK, _AT_EMPTY_PATH = 0x4, 0x1000  # <linux/stat.h>, <fcntl.h>
_NLINK = struct.Struct("=I")  # struct statx's stx_nlink, at offset 16
_statx = getattr(_libc, "statx", None)  # glibc >= 2.28


def opened(fd: int) -> str:
    """A path of the file open as ``fd``, even once it is unlinked."""
    return f"/proc/self/fd/{fd}"


def statx_buffer() -> ctypes.Array[ctypes.c_char]:
    """A ``struct statx`` for :func:`linked`, one per thread at a time."""
    return ctypes.create_string_buffer(256)


def linked(fd: int, buffer: ctypes.Array[ctypes.c_char]) -> bool:
    """True while the file open as ``fd`` has a link (OSError when ``fd`` is closed)."""
    if _statx is not None and not _statx(fd, b"", _AT_EMPTY_PATH, _STATX_NLINK, buffer):
        return bool(_NLINK.unpack_from(buffer, 16)[0])
    return os.fstat(fd).st_nlink > 0  # no statx (old libc or kernel, a seccomp filter)


def at_its_path(fd: int, path: str) -> bool:
    """Whether the file open as ``fd`` is linked at ``path`` (False once ``fd`` is closed)."""
    try:
        held, linked = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return held.st_nlink > 0 and (held.st_ino, held.st_dev) == (linked.st_ino, linked.st_dev)


class Inotify:
    """A non-blocking inotify instance."""

    __slots__ = ("_buffer", "_readable", "fd", "stale")

    def __init__(self) -> None:
        self.fd: int = _call(_libc.inotify_init1, os.O_NONBLOCK | os.O_CLOEXEC)
        self._buffer = bytearray(64 * 1024)
        self._readable: SocketWait | None = None
        self.stale: list[int] = []  # watches to remove before the next use

    def add_watch(self, path: str, mask: int) -> int:  # one watch per file, even twice
        return _call(_libc.inotify_add_watch, self.fd, os.fsencode(path), mask)

    def rm_watch(self, wd: int) -> None:  # OSError when gone with its file
        _call(_libc.inotify_rm_watch, self.fd, wd)

    def read(self) -> dict[int, int]:
        """The events queued now, each watch's masks or-ed (watch -1: overflow), without waiting
        (eventlet's green ``os.read`` would wait)."""
        masks: dict[int, int] = {}
        with contextlib.suppress(BlockingIOError):
            size, offset = os.readv(self.fd, [self._buffer]), 0
            while offset < size:
                wd, mask, _cookie, name_length = _EVENT_HEADER.unpack_from(self._buffer, offset)
                offset += _EVENT_HEADER.size + name_length
                masks[wd] = masks.get(wd, 0) | mask
        return masks

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: forever); whether events are queued."""
        if self._readable is None:
            self._readable = SocketWait(self.fd)
        return self._readable.until(None if timeout is None else time.monotonic() + timeout)

    def close(self) -> None:
        os.close(self.fd)


Callback = Callable[[int, int], object]
"""Told a watch's descriptor and the mask of its events (with ``Q_OVERFLOW``: maybe more)."""


class Watches:
    """An instance shared by several users, each told of its events."""

    def __init__(self, instance: Inotify) -> None:
        self.inotify = instance
        self._callbacks: dict[int, dict[Callback, int]] = {}  # by watch: the mask each wants
        self._mutex = threading.Lock()

    def add(self, path: str, mask: int, callback: Callback) -> int:
        """Pass the events of ``path`` in ``mask`` to ``callback``; the watch, or ``OSError``."""
        with self._mutex:
            wd = self.inotify.add_watch(path, mask | MASK_ADD)
            callbacks = self._callbacks.setdefault(wd, {})
            callbacks[callback] = callbacks.get(callback, 0) | mask | IGNORED | Q_OVERFLOW
        return wd

    def remove(self, wd: int, callback: Callback) -> None:
        with self._mutex:
            callbacks = self._callbacks.get(wd, {})
            callbacks.pop(callback, None)
            if not callbacks and self._callbacks.pop(wd, None) is not None:
                with contextlib.suppress(OSError):  # gone already, with its file
                    self.inotify.rm_watch(wd)

    def dispatch(self) -> None:
        masks = self.inotify.read()
        overflow = masks.pop(-1, 0)
        with self._mutex:
            calls = [(callback, wd, got)
                     for wd, callbacks in self._callbacks.items() if wd in masks or overflow
                     for callback, wanted in callbacks.items()
                     if (got := (masks.get(wd, 0) | overflow) & wanted)]
            for wd in [wd for wd, mask in masks.items() if mask & IGNORED]:
                self._callbacks.pop(wd, None)  # the kernel removed the watch
        for callback, wd, mask in calls:
            callback(wd, mask)


_mutex = threading.Lock()
_directories: Watches | None = None
idle: list[Inotify] = []  # instances kept for the next waits, without watches or events


def directories() -> Watches:
    """The process's watches of directories, dispatched on a thread (``OSError``: none)."""
    global _directories
    with _mutex:
        if _directories is None:
            _directories = Watches(Inotify())
            threading.Thread(target=_dispatch_forever, args=(_directories,),
                             name="conch-file-watcher", daemon=True).start()
        return _directories


def _dispatch_forever(watches: Watches) -> None:
    while True:
        watches.inotify.wait(None)
        try:
            watches.dispatch()
        except Exception:  # a listener's: the other watches still need reading
            log.exception("conch-file-watcher: reporting a change of a directory failed")


def borrow() -> Inotify:
    """An instance without watches or events (:class:`BackendUnavailable`: none left)."""
    with _mutex:
        instance = idle.pop() if idle else None
    if instance is not None:
        for wd in instance.stale:  # left by the last wait, to return sooner
            with contextlib.suppress(OSError):  # gone already, with its file
                instance.rm_watch(wd)
        instance.stale = []
        while instance.read():
            pass
        return instance
    try:
        return Inotify()
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            raise
    raise BackendUnavailable("no inotify instance left; raise fs.inotify.max_user_instances")


def give_back(instance: Inotify, watches: list[int]) -> None:
    """Keep ``instance`` for the next wait, which removes its ``watches``."""
    instance.stale = watches
    with _mutex:
        if len(idle) < IDLE_INSTANCES:
            idle.append(instance)
            return
    instance.close()


def _forget_parent() -> None:
    global _mutex, _directories
    _mutex = threading.Lock()
    for instance in [*idle, *([] if _directories is None else [_directories.inotify])]:
        with contextlib.suppress(OSError):
            instance.close()
    idle.clear()
    _directories = None


os.register_at_fork(after_in_child=_forget_parent)


def _call(function: ctypes._NamedFuncPointer, *args: object) -> int:
    while (result := int(function(*args))) == -1:
        if (code := ctypes.get_errno()) != errno.EINTR:
            raise OSError(code, os.strerror(code))
    return result
