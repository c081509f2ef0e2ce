"""``file:///dir``: kernel locks (``flock``) on one lock file per name, no server.

Translation of the contract:

* **hold**: an exclusive ``flock`` on the name's lock file, through a file
  description opened by this lock object, so two objects in one process exclude
  each other like two processes. The kernel frees it when the holder dies.
* **wait forever**: a blocking ``flock``; the kernel wakes the waiter.
* **timed wait**: inotify on the lock file (close events, which a release or a
  dying holder causes) with a ``poll`` timeout, retrying a non-blocking ``flock``
  on each event. The kernel wakes the waiter; nothing sleeps on a timer.
  Closing the backend wakes its timed waiters the same way (it opens and closes
  their lock files); a blocking ``flock`` cannot be woken: it ends when granted.
* **asyncio**: the same inotify events, read through the event loop
  (:mod:`conch.backends.file_async`), for every wait.
* **fencing token**: the last token of a name is stored in its lock file and
  incremented by each holder. A new lock file starts above the directory's
  high-water mark in ``.conch-fencing-tokens`` and above the wall clock in
  microseconds, so even a wiped lock file or directory starts above the tokens
  it handed out (unless the clock went back, or more than a million tokens per
  second were issued).
* **clean-up**: creating and unlinking a file per hold would cost more than the
  lock itself, so files stay while in use. Files idle longer than
  ``sweep_after`` seconds (URL option, default 300) are removed by a sweep that
  locks each one first and raises the high-water mark to its token. A waiter
  that locks a swept (unlinked) file sees ``st_nlink == 0`` and starts over:
  only the file linked at the path counts.

* **introspection**: each hold writes its stamp after the token (see ``HOLD_RECORD``);
  :mod:`conch.backends.file_inspection` reads it, and ``/proc/locks`` for who holds.

Linux only (inotify). Locks exclude the processes of one host that see the
same directory; do not use NFS.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Iterator

from conch.backends import file_inspection
from conch.backends.base import AsyncLockHandle, Backend, Deadline, LockHandle, LossCallback
from conch.backends.file_async import FileAsyncLock
from conch.backends.file_locking import (
    LockFile,
    borrow_inotify,
    give_back_inotify,
    try_lock,
    watch,
)
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, InvalidURL, NotSupported
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

HIGH_WATER_FILE = ".conch-fencing-tokens"
_TOKEN = struct.Struct("<Q")
HOLD_RECORD = struct.Struct("<QqI")
"""A lock file starts with its last token, the hold's start (Unix µs) and the holder's
pid, then the holder's stamp head (JSON), all written by one ``pwrite``: formatting
them as JSON text would cost more than the rest of the acquire. Bytes left over
from a longer stamp are ignored by the reader."""
_UNREADABLE = re.compile(rb"[^A-Za-z0-9_-]+")

_open_backends: weakref.WeakSet[FileBackend] = weakref.WeakSet()


def lock_file_name(key: bytes) -> str:
    """A file name unique to ``key``: a readable prefix and 160 bits of its SHA-256."""
    readable = _UNREADABLE.sub(b"_", key[:48]).decode("ascii")
    return f"{readable}.{hashlib.sha256(key).hexdigest()[:40]}.lock"


class FileBackend(Backend):
    """Locks in a directory of this host."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True,
        shared_locks=False, distributed=False, introspection=True, breakable=False,
        native_async=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        url.options({"sweep_after"})
        if url.hosts not in ((), (("localhost", None),)):
            raise InvalidURL(f"file:// URLs take no host, use file:///absolute/dir: {url}")
        if not url.path.startswith("/") or url.path == "/":
            raise InvalidURL(f"file:// URLs need an absolute directory, as file:///dir: {url}")
        self.directory = url.path
        self.sweep_after = url.float_option("sweep_after", 300.0)
        self._high_water_fd = -1
        self._high_water_mutex = threading.Lock()
        self._next_sweep = 0.0
        self._sweeping = threading.Lock()
        self._pid = 0  # for hold records (os.getpid() per acquire costs more); see connect()
        self.closed = False
        self._timed_waits: dict[str, int] = {}  # lock file path: timed waiters on it
        self._timed_waits_mutex = threading.Lock()

    def connect(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._open_high_water()
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot use lock directory {self.directory}: {exc.strerror}"
            ) from None
        self._next_sweep = time.monotonic() + self.sweep_after
        self._pid = os.getpid()
        _open_backends.add(self)

    def close(self) -> None:
        _open_backends.discard(self)
        with self._timed_waits_mutex:
            self.closed = True
            waited = list(self._timed_waits)
        for path in waited:  # a close for writing is the event its waiters watch for
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        with self._high_water_mutex:  # a sweep thread may be using the descriptor
            if self._high_water_fd >= 0:
                os.close(self._high_water_fd)
                self._high_water_fd = -1

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return FileLock(self, os.path.join(self.directory, lock_file_name(key)),
                        HolderStamp(key, self.member_id))

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        return FileAsyncLock(FileLock(self, os.path.join(self.directory, lock_file_name(key)),
                                      HolderStamp(key, self.member_id)))

    def describe_lock(self, key: bytes) -> LockInfo:
        return file_inspection.describe(os.path.join(self.directory, lock_file_name(key)), key)

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return file_inspection.held_locks(self.directory)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        holder = self.describe_lock(key).holder
        pid = f" (pid {holder.pid})" if holder is not None and holder.pid else ""
        raise NotSupported(
            "file:// locks are kernel flocks: only the holding process can release one; "
            f"stop the holder{pid} instead, and the kernel frees its locks"
        )

    @contextlib.contextmanager
    def timed_wait(self, path: str) -> Iterator[None]:
        """A timed wait on lock file ``path``, which :meth:`close` wakes: enter it once
        the file is watched, and check :attr:`closed` after."""
        with self._timed_waits_mutex:
            self._timed_waits[path] = self._timed_waits.get(path, 0) + 1
        try:
            yield
        finally:
            with self._timed_waits_mutex:
                self._timed_waits[path] -= 1
                if not self._timed_waits[path]:
                    del self._timed_waits[path]

    def next_token(self, lock_fd: int, stamp: HolderStamp) -> int:
        """Store and return the next token of the locked file ``lock_fd``, with the hold's
        start time, pid and stamp for ``conch show`` (see ``HOLD_RECORD``)."""
        stored = os.pread(lock_fd, _TOKEN.size, 0)
        if len(stored) == _TOKEN.size:
            token = int(_TOKEN.unpack(stored)[0]) + 1
        else:
            token = self._raise_high_water(None)
        os.pwrite(lock_fd, HOLD_RECORD.pack(token, time.time_ns() // 1000, self._pid)
                  + stamp.head, 0)
        return token

    def sweep_if_due(self) -> None:
        """Start a background sweep when ``sweep_after`` has passed since the last one."""
        now = time.monotonic()
        if now >= self._next_sweep and self._sweeping.acquire(blocking=False):
            self._next_sweep = now + self.sweep_after
            threading.Thread(target=self.sweep, name="conch-file-sweep", daemon=True).start()

    def sweep(self) -> int:
        """Remove lock files idle for ``sweep_after`` seconds; return how many."""
        removed = 0
        # File times are wall-clock: a jump only changes which idle files go.
        oldest = time.time() - self.sweep_after
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(".lock") and entry.stat().st_mtime < oldest:
                        removed += self._remove_if_free(entry.path)
        except OSError:
            pass  # the next sweep tries again; a failed sweep never affects locking
        finally:
            if self._sweeping.locked():
                self._sweeping.release()
        return removed

    def _remove_if_free(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            if not try_lock(fd) or os.fstat(fd).st_nlink == 0:
                return 0
            stored = os.pread(fd, _TOKEN.size, 0)
            if len(stored) == _TOKEN.size:
                self._raise_high_water(int(_TOKEN.unpack(stored)[0]))
            os.unlink(path)
            return 1
        finally:
            os.close(fd)

    def _raise_high_water(self, seen: int | None) -> int:
        """Raise the mark to ``seen``, or (``None``) to a fresh token above it; return it."""
        with self._high_water_mutex:  # flock does not exclude threads sharing one fd
            fd = self._high_water_fd
            if fd < 0:
                raise OSError(errno.EBADF, f"lock directory {self.directory} was closed")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                stored = os.pread(fd, _TOKEN.size, 0)
                mark = int(_TOKEN.unpack(stored)[0]) if len(stored) == _TOKEN.size \
                    else time.time_ns() // 1000
                # A fresh file starts above the clock too: its name's old file may have
                # been wiped after issuing tokens above the mark.
                mark = max(mark + 1, time.time_ns() // 1000) if seen is None \
                    else max(mark, seen)
                os.pwrite(fd, _TOKEN.pack(mark), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return mark

    def _open_high_water(self) -> None:
        self._high_water_fd = os.open(
            os.path.join(self.directory, HIGH_WATER_FILE),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o644,
        )

    def _reopen_in_child(self) -> None:
        # After fork the child shares the parent's file description, so the
        # parent's flock would not exclude it: give the child its own.
        self._high_water_mutex = threading.Lock()
        self._sweeping = threading.Lock()
        self._pid = os.getpid()
        if self._high_water_fd >= 0:
            os.close(self._high_water_fd)
            self._open_high_water()


class FileLock(LockHandle):
    """The hold of one lock object: the flock of its descriptor of the lock file."""

    def __init__(self, backend: FileBackend, path: str, stamp: HolderStamp) -> None:
        self._backend = backend
        self._path = path
        self.file = LockFile(backend, path, stamp)

    def acquire(self, deadline: Deadline) -> int | None:
        with self.file.attempt() as file:
            if file.try_take() is None and not deadline.expired():
                if deadline.forever:
                    _wait_forever(file)
                else:
                    _wait_until(file, deadline, self._backend, self._path)
        return file.token

    def release(self) -> None:
        self.file.close()  # frees the flock and wakes the waiters
        self._backend.sweep_if_due()


def _wait_forever(file: LockFile) -> None:
    while file.try_take() is None:
        # The kernel wakes us holding the flock; the try then checks the file still counts.
        fcntl.flock(file.fd, fcntl.LOCK_EX)


def _wait_until(file: LockFile, deadline: Deadline, backend: FileBackend, path: str) -> None:
    watcher = borrow_inotify()
    watches = [watch(watcher, file.fd)]
    file.on_open = lambda fd: watches.append(watch(watcher, fd))
    try:
        with backend.timed_wait(path):
            while file.try_take() is None:  # watch first, then retry: no wakeup is missed
                remaining = deadline.remaining()
                if not remaining or backend.closed:
                    return
                if watcher.wait(remaining):
                    watcher.read()
    finally:
        file.on_open = None
        give_back_inotify(watcher, watches)


def _reopen_all_in_child() -> None:
    for backend in list(_open_backends):
        backend._reopen_in_child()


os.register_at_fork(after_in_child=_reopen_all_in_child)
