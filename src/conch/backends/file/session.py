"""The lock directory a ``file://`` backend opened, as its handles use it: the name →
file mapping, fencing tokens, removal tracking, the sweep of idle lock files, and the
timed waits that closing it wakes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator

from conch.backends.file.removal import Removals
from conch.backends.file.tokens import Tokens
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.naming import readable_key


def try_lock(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` unless another description holds one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FileSession:
    """One backend's use of its lock directory."""

    def __init__(self, directory: str, sweep_after: float) -> None:
        self.directory = directory
        self.sweep_after = sweep_after
        self.tokens = Tokens(directory)
        self.removals = Removals(directory)
        self.closed = False
        self._next_sweep = 0.0
        self._sweeping = threading.Lock()
        self._woken_waits: dict[str, int] = {}  # lock file path: waiters close() wakes
        self._woken_waits_mutex = threading.Lock()

    def open(self) -> None:
        """Create the directory if need be and open it (``OSError`` when unusable)."""
        os.makedirs(self.directory, exist_ok=True)
        self.tokens.open()
        self._next_sweep = time.monotonic() + self.sweep_after
        forget_in_child(self)

    def close(self) -> None:
        """Stop: wake the timed waits (a close for writing is the event they watch for)."""
        with self._woken_waits_mutex:
            self.closed = True
            waited = list(self._woken_waits)
        for path in waited:
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        self.removals.close()
        self.tokens.close()

    def lock_path(self, key: bytes) -> str:
        """The lock file of ``key``: a readable prefix and 160 bits of its SHA-256."""
        return os.path.join(self.directory, readable_key(key, 40) + ".lock")

    @contextlib.contextmanager
    def wait_woken_by_close(self, path: str) -> Iterator[None]:
        """An inotify wait on lock file ``path`` that :meth:`close` wakes: enter it once
        the file is watched, and check :attr:`closed` after."""
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
        """Start a sweep on a thread when ``sweep_after`` has passed since the last one."""
        now = time.monotonic()
        if now >= self._next_sweep and self._sweeping.acquire(blocking=False):
            self._next_sweep = now + self.sweep_after
            threading.Thread(target=self.sweep, name="conch-file-sweep", daemon=True).start()

    def sweep(self) -> int:
        """Remove the lock files idle for ``sweep_after`` seconds; how many."""
        removed = 0
        oldest = time.time() - self.sweep_after  # file times: a clock jump changes only which go
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
            self.tokens.retire(fd)  # its next file starts above its token
            os.unlink(path)
            return 1
        finally:
            os.close(fd)

    def forget_parent(self) -> None:
        self._sweeping = threading.Lock()
        self._woken_waits_mutex = threading.Lock()
        self.removals.wd = None  # the parent's watch: the child watches anew
        self.tokens.reopen_in_child()
