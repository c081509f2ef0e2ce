"""The lock directory a ``file://`` backend opened, as its handles use it: the name →
file mapping, tokens, removal tracking, the sweep of idle files, and the waits that
closing it wakes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator

from conch.backends.file.removal import Removals
from conch.backends.file.tokens import Tokens, stored_token
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.naming import readable_key


class FileSession:
    """One backend's use of its lock directory."""

    def __init__(self, directory: str, sweep_after: float) -> None:
        self.directory = directory
        self.sweep_after = sweep_after
        self.tokens = Tokens(directory)
        self.removals = Removals(directory)
        self.closed = False
        self.next_sweep = 0.0
        self._sweeping = threading.Lock()
        self._waits: dict[str, int] = {}  # lock file path: waits close() wakes
        self._waits_mutex = threading.Lock()

    def open(self) -> None:
        """Create the directory if need be and open it (``OSError`` when unusable)."""
        os.makedirs(self.directory, exist_ok=True)
        self.tokens.open()
        self.next_sweep = time.monotonic() + self.sweep_after
        forget_in_child(self)

    def close(self) -> None:
        with self._waits_mutex:
            self.closed = True
            waited = list(self._waits)
        for path in waited:  # a close for writing is the event its waits watch for
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        self.removals.close()
        self.tokens.close()

    def lock_path(self, key: bytes) -> str:
        """The lock file of ``key``: a readable prefix and 160 bits of its SHA-256."""
        return os.path.join(self.directory, readable_key(key, 40) + ".lock")

    @contextlib.contextmanager
    def woken_by_close(self, path: str) -> Iterator[None]:
        """An inotify wait on lock file ``path`` that :meth:`close` wakes: enter it once
        the file is watched, and check :attr:`closed` after."""
        with self._waits_mutex:
            self._waits[path] = self._waits.get(path, 0) + 1
        try:
            yield
        finally:
            with self._waits_mutex:
                self._waits[path] -= 1
                if not self._waits[path]:
                    del self._waits[path]

    def sweep_soon(self) -> None:
        """Start a sweep on a thread, unless one runs (due: ``monotonic() >= next_sweep``)."""
        if self._sweeping.acquire(blocking=False):
            self.next_sweep = time.monotonic() + self.sweep_after
            threading.Thread(target=self.sweep, name="conch-file-sweep", daemon=True).start()

    def sweep(self) -> int:
        """Remove the lock files idle for ``sweep_after`` seconds, each locked first (so
        never a held one), after raising the mark to its token; how many."""
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
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: held
                if os.fstat(fd).st_nlink:
                    if (token := stored_token(fd)) is not None:
                        self.tokens.raise_high_water(token)
                    os.unlink(path)
                    return 1
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        return 0

    def forget_parent(self) -> None:
        self._sweeping, self._waits_mutex = threading.Lock(), threading.Lock()
        self.removals.forget_parent()
        self.tokens.forget_parent()
