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
* **eventlet**: in a monkey-patched process every wait, forever too, is the timed
  wait's, blocking in eventlet's hub instead of ``poll``
  (:mod:`~conch.backends.file.inotify`), so other green threads run meanwhile and
  closing the backend ends a forever wait as well.
* **asyncio**: the same inotify events, read through the event loop
  (:mod:`conch.backends.file.async_lock`), for every wait.
* **fencing token**: stored in the lock file, incremented by each holder; a new
  file starts above the directory's high-water mark and the wall clock
  (:mod:`~conch.backends.file.tokens`).
* **clean-up**: creating and unlinking a file per hold would cost more than the
  lock itself, so files stay while in use. Files idle longer than
  ``sweep_after`` seconds (URL option, default 300) are removed by a sweep that
  locks each one first and raises the high-water mark to its token. A waiter
  that locks a swept (unlinked) file sees ``st_nlink == 0`` and starts over:
  only the file linked at the path counts.
* **a removed directory**: the next acquire creates it again (and the
  high-water mark file, carrying its mark). A hold whose file was removed no
  longer excludes anyone and is reported lost (:mod:`~conch.backends.file.removal`);
  its waiters move to the new file once the old holder lets go.
* **introspection**: each hold writes its stamp after the token (see ``HOLD_RECORD``);
  :mod:`conch.backends.file.inspection` reads it, and ``/proc/locks`` for who holds.

Linux only (inotify). Locks exclude the processes of one host that see the
same directory; do not use NFS.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator

from conch.backends.base import AsyncLockHandle, Backend, Deadline, LockHandle, LossCallback
from conch.backends.file import inspection, removal
from conch.backends.file.async_lock import FileAsyncLock
from conch.backends.file.lock import (
    LockFile,
    borrow_inotify,
    give_back_inotify,
    try_lock,
    watch,
)
from conch.backends.file.removal import Removals
from conch.backends.file.tokens import Tokens
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, InvalidURL, LockLost, NotSupported
from conch.green import eventlet_patched
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

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
        self.tokens = Tokens(self.directory)
        self.removals = Removals(self.directory)
        self._next_sweep = 0.0
        self._sweeping = threading.Lock()
        self.closed = False
        self._woken_waits: dict[str, int] = {}  # lock file path: waiters close() wakes
        self._woken_waits_mutex = threading.Lock()

    def connect(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            self.tokens.open()
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot use lock directory {self.directory}: {exc.strerror}"
            ) from None
        self._next_sweep = time.monotonic() + self.sweep_after
        _open_backends.add(self)

    def close(self) -> None:
        _open_backends.discard(self)
        with self._woken_waits_mutex:
            self.closed = True
            waited = list(self._woken_waits)
        for path in waited:  # a close for writing is the event its waiters watch for
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        self.removals.close()
        self.tokens.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return FileLock(self, os.path.join(self.directory, lock_file_name(key)),
                        HolderStamp(key, self.member_id), on_lost)

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        return FileAsyncLock(FileLock(self, os.path.join(self.directory, lock_file_name(key)),
                                      HolderStamp(key, self.member_id), on_lost))

    def describe_lock(self, key: bytes) -> LockInfo:
        return inspection.describe(os.path.join(self.directory, lock_file_name(key)), key)

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return inspection.held_locks(self.directory)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        holder = self.describe_lock(key).holder
        pid = f" (pid {holder.pid})" if holder is not None and holder.pid else ""
        raise NotSupported(
            "file:// locks are kernel flocks: only the holding process can release one; "
            f"stop the holder{pid} instead, and the kernel frees its locks"
        )

    @contextlib.contextmanager
    def wait_woken_by_close(self, path: str) -> Iterator[None]:
        """A wait on lock file ``path`` through inotify, which :meth:`close` wakes: enter
        it once the file is watched, and check :attr:`closed` after."""
        with self._woken_waits_mutex:
            self._woken_waits[path] = self._woken_waits.get(path, 0) + 1
        try:
            yield
        finally:
            with self._woken_waits_mutex:
                self._woken_waits[path] -= 1
                if not self._woken_waits[path]:
                    del self._woken_waits[path]

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
            self.tokens.retire(fd)
            os.unlink(path)
            return 1
        finally:
            os.close(fd)

    def _reopen_in_child(self) -> None:
        self._sweeping = threading.Lock()
        self.tokens.reopen_in_child()


class FileLock(LockHandle):
    """The hold of one lock object: the flock of its descriptor of the lock file."""

    def __init__(self, backend: FileBackend, path: str, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._backend = backend
        self._path = path
        self.file = LockFile(backend, path, stamp, on_lost)

    def acquire(self, deadline: Deadline) -> int | None:
        with self.file.attempt() as file:
            if file.try_take() is None and not deadline.expired():
                if deadline.forever and not eventlet_patched():
                    _wait_in_flock(file)
                else:
                    _wait_for_events(file, deadline, self._backend, self._path)
        return file.token

    def release(self) -> None:
        linked = self.file.release()  # frees the flock and wakes the waiters
        self._backend.sweep_if_due()
        if not linked:
            raise LockLost(f"lock file {self._path} was removed while held (was the lock "
                           "directory cleaned up?): another process may have taken the lock")


def _wait_in_flock(file: LockFile) -> None:
    while file.try_take() is None:
        # The kernel wakes us holding the flock; the try then checks the file still counts.
        fcntl.flock(file.fd, fcntl.LOCK_EX)


def _wait_for_events(file: LockFile, deadline: Deadline, backend: FileBackend,
                     path: str) -> None:
    watcher = borrow_inotify()
    watches = [watch(watcher, file.fd)]
    file.on_open = lambda fd: watches.append(watch(watcher, fd))
    try:
        with backend.wait_woken_by_close(path):
            while file.try_take() is None:  # watch first, then retry: no wakeup is missed
                remaining = deadline.remaining()
                if remaining == 0 or backend.closed:
                    return
                if watcher.wait(remaining):
                    watcher.read()
    finally:
        file.on_open = None
        give_back_inotify(watcher, watches)


def _reopen_all_in_child() -> None:
    backends = list(_open_backends)
    for backend in backends:
        backend._reopen_in_child()
    removal.forget_in_child(backend.removals for backend in backends)


os.register_at_fork(after_in_child=_reopen_all_in_child)
