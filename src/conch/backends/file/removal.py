"""Reporting a ``file://`` hold lost when its lock file is removed or renamed (its
directory cleaned up): the next acquirer takes a new file at the path. See docs/file.md."""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import struct
import threading

from conch.backends.base import LossCallback
from conch.backends.file import inotify
from conch.backends.kit.session import Holds

log = logging.getLogger("conch")

_REMOVALS = inotify.DELETE | inotify.MOVED_FROM | inotify.DELETE_SELF | inotify.MOVE_SELF
_OF_THE_DIRECTORY = inotify.DELETE_SELF | inotify.MOVE_SELF | inotify.IGNORED | inotify.Q_OVERFLOW
_STATX_NLINK, _AT_EMPTY_PATH = 0x4, 0x1000  # <linux/stat.h>, <fcntl.h>
_NLINK = struct.Struct("=I")  # struct statx's stx_nlink, at offset 16
_statx = getattr(ctypes.CDLL(None, use_errno=True), "statx", None)  # glibc >= 2.28


@dataclasses.dataclass(eq=False, slots=True)
class Hold:
    """A record per hold (compared by identity), so that a check racing with the release
    reports nothing, even when the lock holds again on a descriptor of the same number."""

    fd: int
    path: str


def statx_buffer() -> ctypes.Array[ctypes.c_char]:
    """A ``struct statx`` for :func:`linked`, one per thread at a time."""
    return ctypes.create_string_buffer(256)


def linked(fd: int, buffer: ctypes.Array[ctypes.c_char]) -> bool:
    """True while the file open as ``fd`` has a link (OSError when ``fd`` is closed): the
    link count alone, not the times (docs/file.md, "Link counts without times")."""
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


class Removals:
    """The holds of one backend's directory, checked when something is removed from it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.seen = 0  # batches of removal events read for the directory
        self.wd: int | None = None  # the directory's watch
        self.holds: Holds[Hold] = Holds()
        self._mutex = threading.Lock()  # for wd

    def track(self, hold: Hold, on_lost: LossCallback, seen_before: int) -> None:
        """Track ``hold``, of an acquire begun when :attr:`seen` was ``seen_before``."""
        unwatched = self.wd is None  # the first hold, or the directory was removed since
        if unwatched:
            self._watch(None)
        self.holds.add(hold, on_lost)
        if unwatched or self.seen != seen_before:  # removals the thread may have missed
            self.check([hold])

    def check(self, holds: list[Hold] | None = None) -> None:
        """Report lost each of ``holds`` (``None``: all) that is no longer at its path."""
        for hold in self.holds.snapshot() if holds is None else holds:
            if not at_its_path(hold.fd, hold.path):
                self.holds.lose(hold, f"its lock file {hold.path} was removed or renamed "
                                      "(was the lock directory cleaned up?): another "
                                      "process may take the lock")

    def close(self) -> None:
        with self._mutex:
            if self.wd is not None:
                inotify.directories().remove(self.wd, self._removed)
            self.wd = None

    def forget_parent(self) -> None:
        self._mutex, self.wd = threading.Lock(), None  # the parent's watch: watch anew

    def _watch(self, replaced: int | None) -> None:
        """Watch the directory at the path, instead of ``replaced`` (unless watched since)."""
        with self._mutex:
            if self.wd != replaced:
                return
            if replaced is not None:
                inotify.directories().remove(replaced, self._removed)
                self.wd = None
            try:
                self.wd = inotify.directories().add(self.directory, _REMOVALS, self._removed)
            except FileNotFoundError:  # gone: its holds are lost
                pass
            except OSError as exc:  # ENOSPC: fs.inotify.max_user_watches
                log.warning("cannot watch lock directory %s for removals (%s): a hold whose "
                            "file is removed is reported lost only by its release",
                            self.directory, exc.strerror)

    def _removed(self, _wd: int, mask: int) -> None:
        self.seen += 1
        if mask & _OF_THE_DIRECTORY:  # the directory went, or events were dropped
            self._watch(self.wd)
        self.check()
