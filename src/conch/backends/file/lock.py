"""Taking a ``file://`` lock: :class:`LockFile` (a try at the name's file, the hold, its
release), shared with the asyncio handle, and the blocking handle's waits.
"""

from __future__ import annotations

import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.file import inotify
from conch.backends.file.removal import Hold, at_its_path, linked, statx_buffer
from conch.backends.file.session import FileSession, open_creating
from conch.errors import LockLost
from conch.green import eventlet_patched
from conch.introspection import HolderStamp


class LockFile:
    """A lock object's descriptor of its lock file: opened by each acquire
    (:meth:`attempt`), kept while held, closed to release (from any thread)."""

    __slots__ = ("_hold", "_on_lost", "_seen", "_stamp", "_statx", "fd", "on_open", "path",
                 "session", "token")

    def __init__(self, session: FileSession, key: bytes, member_id: str,
                 on_lost: LossCallback) -> None:
        self.session = session
        self.path = session.lock_path(key)
        self._stamp = _stamp(key, member_id)
        self._on_lost = on_lost  # told when the held file is removed from under the hold
        self._hold: Hold | None = None
        self._statx = statx_buffer()  # used by one acquire or release at a time
        self._seen = 0
        self.fd = -1
        self.token: int | None = None
        self.on_open: Callable[[int], object] | None = None  # told of a replaced file's fd

    def attempt(self) -> LockFile:
        """Open the file: a context manager that closes it again unless a try took it."""
        self.token = self.on_open = None
        self._seen = self.session.removals.seen  # before the open: a removal after it shows
        self.fd = open_creating(self.path)
        return self

    def __enter__(self) -> LockFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.token is None or exc_type is not None:
            self.token = None
            self.close()

    def try_take(self) -> int | None:
        """One try without waiting: the token (also in ``token``), or ``None`` while held
        elsewhere. A file removed meanwhile (swept, or with its directory) no longer
        counts: the file now at the path (created if need be) is tried in its place."""
        removals = self.session.removals
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            # After removals, linked is not enough: a renamed directory keeps its files.
            if linked(self.fd, self._statx) if removals.seen == self._seen \
                    else at_its_path(self.fd, self.path):
                self.token = self.session.next_token(self.fd, self._stamp)
                self._hold = Hold(self.fd, self.path)
                removals.track(self._hold, self._on_lost, self._seen)
                return self.token
            self.close()
            self.fd = open_creating(self.path)
            if self.on_open is not None:
                self.on_open(self.fd)

    def waits(self, deadline: Deadline) -> Iterator[float | None]:
        """Tries until held, watched first so that no wakeup is missed: yields how long to
        wait for the file's next event (``None``: no limit) before the next try; ends
        when held, at ``deadline``, or once the session closed."""
        while self.try_take() is None:
            remaining = deadline.remaining()
            if remaining == 0 or self.session.closed:
                return
            yield remaining

    def release(self) -> None:
        """Free the hold; :class:`LockLost` when its file was removed while held."""
        try:
            still_linked = self.fd < 0 or linked(self.fd, self._statx)
        except OSError:  # closed meanwhile, by a coordinator that stops
            still_linked = True
        self.close()  # frees the flock and wakes the waiters
        if time.monotonic() >= self.session.next_sweep:
            self.session.sweep_soon()
        if not still_linked:
            raise LockLost(f"lock file {self.path} was removed while held (was the lock "
                           "directory cleaned up?): another process may have taken the lock")

    def close(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:  # before the close: a check of a closed hold reports nothing
            self.session.removals.holds.discard(hold)
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


@functools.lru_cache(maxsize=1024)  # a lock object per call (@synchronized) names it again
def _stamp(key: bytes, member_id: str) -> HolderStamp:
    return HolderStamp(key, member_id)


class FileLock(LockHandle):
    """The blocking handle: waits in ``flock`` when forever, else on inotify events."""

    def __init__(self, file: LockFile) -> None:
        self.file = file

    def acquire(self, deadline: Deadline) -> int | None:
        with self.file.attempt() as file:
            if file.try_take() is None and not deadline.expired():
                if deadline.forever and not eventlet_patched():
                    while file.try_take() is None:  # granted: then check the file counts
                        fcntl.flock(file.fd, fcntl.LOCK_EX)
                else:
                    _wait_for_events(file, deadline)
        return file.token

    def release(self) -> None:
        self.file.release()


def _wait_for_events(file: LockFile, deadline: Deadline) -> None:
    """Try again on each event of the file until held, ``deadline`` or the backend's close."""
    watcher = inotify.idle.borrow()
    watches = [watcher.add_watch(inotify.opened(file.fd), inotify.FREED)]
    file.on_open = lambda fd: watches.append(watcher.add_watch(inotify.opened(fd), inotify.FREED))
    try:
        with file.session.woken_by_close(file.path):
            for remaining in file.waits(deadline):
                if watcher.wait(remaining):
                    if file.try_take() is not None:  # the hand-off: the events wait for later
                        return
                    watcher.read()  # then try again: a release after this read is an event
    finally:
        file.on_open = None
        inotify.idle.give_back(watcher, watches)
