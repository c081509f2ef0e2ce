"""Fencing tokens of a ``file://`` directory: the hold record at the start of each lock
file, and the directory's high-water mark, where a file with no token starts (above
the wall clock in µs too, so a wiped directory starts above what it handed out).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import threading
import time

from conch.introspection import HolderStamp

HIGH_WATER_FILE = ".conch-fencing-tokens"
# A lock file starts with its last token, the hold's start (Unix µs) and the holder's pid,
# then the stamp's head (JSON), in one pwrite; the reader ignores what a longer one left.
HOLD_RECORD = struct.Struct("<QqI")
_TOKEN = struct.Struct("<Q")


def open_creating(path: str) -> int:
    """Open (or create) ``path`` to read and write, making its directory again as often as
    it is removed meanwhile."""
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # created, then removed again
                os.makedirs(os.path.dirname(path), exist_ok=True)


def stored_token(fd: int) -> int | None:
    stored = os.pread(fd, _TOKEN.size, 0)
    return int(_TOKEN.unpack(stored)[0]) if len(stored) == _TOKEN.size else None


class Tokens:
    """The tokens of one directory for one backend, which keeps the mark file open."""

    def __init__(self, directory: str) -> None:
        self._path = os.path.join(directory, HIGH_WATER_FILE)
        self._fd = -1
        self._mutex = threading.Lock()  # flock does not exclude threads sharing one fd
        self._pid = os.getpid()  # for hold records (os.getpid() per acquire costs more)

    def open(self) -> None:
        self._fd = open_creating(self._path)

    def close(self) -> None:
        with self._mutex:  # once a sweep using it is done
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def next_token(self, lock_fd: int, stamp: HolderStamp) -> int:
        """Store the next token of locked file ``lock_fd`` with the hold's record; return it."""
        token = stored_token(lock_fd)
        token = self.raise_high_water(None) if token is None else token + 1
        os.pwrite(lock_fd, HOLD_RECORD.pack(token, time.time_ns() // 1000, self._pid)
                  + stamp.head, 0)
        return token

    def raise_high_water(self, seen: int | None) -> int:
        """Raise the mark to ``seen`` (a token of a file about to be removed), or (``None``)
        to a fresh token above it and the clock; return the mark."""
        with self._mutex:
            if self._fd < 0:
                raise OSError(errno.EBADF, f"lock directory {os.path.dirname(self._path)} "
                                           "was closed")
            carried = self._recreate_if_removed()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                stored = stored_token(self._fd)
                mark = max(time.time_ns() // 1000 if stored is None else stored, carried)
                # Above the clock too: the name's old file may have been wiped after
                # issuing tokens above the mark.
                mark = max(mark + 1, time.time_ns() // 1000) if seen is None \
                    else max(mark, seen)
                os.pwrite(self._fd, _TOKEN.pack(mark), 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return mark

    def _recreate_if_removed(self) -> int:
        """A new mark file if ours was removed (with its directory); the mark it carried."""
        if os.fstat(self._fd).st_nlink:
            return 0
        removed = stored_token(self._fd) or 0
        fd = open_creating(self._path)  # on failure, keep the removed one for the next try
        os.close(self._fd)
        self._fd = fd
        return removed

    def forget_parent(self) -> None:
        """After fork the child shares the parent's description of the mark file, whose
        flock would not exclude it: give the child its own."""
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = open_creating(self._path)
