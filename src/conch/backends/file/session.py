"""A ``file://`` lock directory: names to files, fencing tokens, the sweep, and holds lost
when their file is removed (docs/file.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator

from conch.backends.base import LossCallback
from conch.backends.file import inotify
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.naming import readable_key
from conch.backends.kit.session import Holds
from conch.introspection import HolderStamp

log = logging.getLogger("conch")

HIGH_WATER_FILE = ".conch-fencing-tokens"
GATE_SUFFIX = ".gate"  # for ``.lock``: a name's gate file
HOLD_RECORD = struct.Struct("<QqI")  # token, start (Unix µs), pid; then the stamp's head
_TOKEN = struct.Struct("<Q")
# Shared holders draw tokens under an OFD lock on the token's bytes.
_TOKEN_RANGE = struct.Struct("@hhqqi4x")  # struct flock: type, whence, start, length, pid
_LOCK_TOKEN = _TOKEN_RANGE.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, _TOKEN.size, 0)
_UNLOCK_TOKEN = _TOKEN_RANGE.pack(fcntl.F_UNLCK, os.SEEK_SET, 0, _TOKEN.size, 0)
_REMOVALS = inotify.DELETE | inotify.MOVED_FROM | inotify.DELETE_SELF | inotify.MOVE_SELF
_OF_THE_DIRECTORY = inotify.DELETE_SELF | inotify.MOVE_SELF | inotify.IGNORED | inotify.Q_OVERFLOW


@dataclasses.dataclass(eq=False, slots=True)
class Hold:
    """A hold's record, compared by identity: a check racing with its release reports nothing."""

    fd: int
    path: str


def open_creating(path: str) -> int:
    """Open (or create) ``path`` to read and write, making its directory if missing."""
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # created, then removed again
                os.makedirs(os.path.dirname(path), exist_ok=True)


def try_flock(fd: int, mode: int) -> bool:
    """Lock ``fd`` in ``mode`` without waiting: whether it did."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def tried(path: str, mode: int, flags: int = os.O_RDWR) -> Iterator[tuple[int, bool]]:
    """``path`` opened and closed after, and whether a try at locking it in ``mode`` took it
    (lock files opened for writing: their close wakes waiters)."""
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        yield fd, try_flock(fd, mode)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1024)  # a lock object per call (@synchronized) names it again
def _file_name(key: bytes) -> str:
    return readable_key(key, 40) + ".lock"


def stored_token(fd: int) -> int | None:
    stored = os.pread(fd, _TOKEN.size, 0)
    return int(_TOKEN.unpack(stored)[0]) if len(stored) == _TOKEN.size else None


class FileSession:
    """One backend's use of its lock directory."""

    def __init__(self, directory: str, sweep_after: float) -> None:
        self.directory, self.sweep_after, self.next_sweep = directory, sweep_after, 0.0
        self.closed = False
        self.holds: Holds[Hold] = Holds()
        self.seen = 0  # batches of removal events read for the directory
        self._wd: int | None = None  # the directory's watch, for removals
        self._sweeping = threading.Lock()
        self.waits: list[str] = []  # the watched lock files of the waits close() wakes
        self._mutex = threading.Lock()  # for the mark and the watch
        self._mark_path, self._mark = os.path.join(directory, HIGH_WATER_FILE), -1
        self._pid = os.getpid()  # for hold records (os.getpid() per acquire costs more)

    def open(self) -> None:  # OSError when the directory is unusable
        os.makedirs(self.directory, exist_ok=True)
        self._mark = open_creating(self._mark_path)
        self.next_sweep = time.monotonic() + self.sweep_after
        forget_in_child(self)

    def close(self) -> None:
        with self._mutex:  # once a sweep using the mark is done
            self.closed = True
            waited = set(self.waits)  # a wait added later sees closed before it waits
            if self._mark >= 0:
                os.close(self._mark)
                self._mark = -1
            if self._wd is not None:
                inotify.directories().remove(self._wd, self._removed)
            self._wd = None
        for path in waited:  # a close for writing is the event its waits watch for
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CLOEXEC))

    def lock_path(self, key: bytes) -> str:
        return os.path.join(self.directory, _file_name(key))

    def next_token(self, lock_fd: int, stamp: HolderStamp, mode: int = fcntl.LOCK_EX) -> int:
        """Store and return the next token of ``lock_fd``, locked in ``mode``."""
        if mode == fcntl.LOCK_EX:
            return self.record_hold(lock_fd, self.token_after(stored_token(lock_fd)), stamp)
        fcntl.fcntl(lock_fd, fcntl.F_OFD_SETLKW, _LOCK_TOKEN)  # microseconds, by its holder
        try:
            return self.record_hold(lock_fd, self.token_after(stored_token(lock_fd)), stamp)
        finally:
            fcntl.fcntl(lock_fd, fcntl.F_OFD_SETLK, _UNLOCK_TOKEN)

    def token_after(self, last: int | None) -> int:
        """The token after ``last`` (``None``: a new file's, above the high-water mark)."""
        return self.raise_high_water(None) if last is None else last + 1

    def record_hold(self, fd: int, token: int, stamp: HolderStamp) -> int:
        os.pwrite(fd, HOLD_RECORD.pack(token, time.time_ns() // 1000, self._pid) + stamp.head, 0)
        return token

    def raise_high_water(self, seen: int | None) -> int:
        """Raise the mark to ``seen`` (a removed file's token) or (``None``) above the mark
        and the clock in µs; return the mark."""
        with self._mutex:
            if self._mark < 0:
                raise OSError(errno.EBADF, f"lock directory {self.directory} was closed")
            carried = 0
            if not os.fstat(self._mark).st_nlink:  # removed (with its directory): carry it
                carried = stored_token(self._mark) or 0
                fd = open_creating(self._mark_path)  # failing, keep the old one for a retry
                os.close(self._mark)
                self._mark = fd
            fcntl.flock(self._mark, fcntl.LOCK_EX)
            try:
                stored = stored_token(self._mark)
                mark = max(time.time_ns() // 1000 if stored is None else stored, carried)
                mark = max(mark + 1, time.time_ns() // 1000) if seen is None \
                    else max(mark, seen)
                os.pwrite(self._mark, _TOKEN.pack(mark), 0)
            finally:
                fcntl.flock(self._mark, fcntl.LOCK_UN)
        return mark

    def sweep_soon(self) -> None:
        if self._sweeping.acquire(blocking=False):
            self.next_sweep = time.monotonic() + self.sweep_after
            threading.Thread(target=self.sweep, name="conch-file-sweep", daemon=True).start()

    def sweep(self) -> int:
        """Remove the free lock and gate files idle for ``sweep_after`` s; how many."""
        removed = 0
        oldest = time.time() - self.sweep_after  # file times are wall-clock
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith((".lock", GATE_SUFFIX)) \
                            and entry.stat().st_mtime < oldest:
                        removed += self._remove_if_free(entry.path)
        except OSError:
            pass  # the next sweep tries again; a failed sweep never affects locking
        finally:
            if self._sweeping.locked():
                self._sweeping.release()
        return removed

    def _remove_if_free(self, path: str) -> int:
        with contextlib.suppress(FileNotFoundError), tried(path, fcntl.LOCK_EX) as (fd, free):
            if free and os.fstat(fd).st_nlink:
                if (token := stored_token(fd)) is not None:
                    self.raise_high_water(token)
                os.unlink(path)
                return 1
        return 0  # gone, or held

    def forget_parent(self) -> None:
        """A forked child's own description of the mark file, and no watch."""
        self._sweeping, self._mutex, self._pid = threading.Lock(), threading.Lock(), os.getpid()
        self._wd = None
        if self._mark >= 0:
            os.close(self._mark)
            self._mark = open_creating(self._mark_path)

    def track(self, hold: Hold, on_lost: LossCallback, seen_before: int) -> None:
        """Track ``hold``, of an acquire begun when :attr:`seen` was ``seen_before``."""
        if unwatched := self._wd is None:
            self._watch(None)
        self.holds.add(hold, on_lost)
        if unwatched or self.seen != seen_before:  # removals the thread may have missed
            self._check([hold])

    def _check(self, holds: list[Hold]) -> None:
        for hold in holds:
            if not inotify.at_its_path(hold.fd, hold.path):
                self.holds.lose(hold, f"its lock file {hold.path} was removed or renamed "
                                      "(was the lock directory cleaned up?): another "
                                      "process may take the lock")

    def _watch(self, replaced: int | None) -> None:
        """Watch the directory instead of ``replaced`` (unless watched since)."""
        with self._mutex:
            if self._wd != replaced:
                return
            if replaced is not None:
                inotify.directories().remove(replaced, self._removed)
                self._wd = None
            try:
                self._wd = inotify.directories().add(self.directory, _REMOVALS, self._removed)
            except FileNotFoundError:  # gone: its holds are lost
                pass
            except OSError as exc:  # ENOSPC: fs.inotify.max_user_watches
                log.warning("cannot watch lock directory %s for removals (%s): a hold whose "
                            "file is removed is reported lost only by its release",
                            self.directory, exc.strerror)

    def _removed(self, _wd: int, mask: int) -> None:
        self.seen += 1
        if mask & _OF_THE_DIRECTORY:  # the directory went, or events were dropped
            self._watch(self._wd)
        self._check(self.holds.snapshot())
