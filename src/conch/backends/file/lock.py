"""Taking a ``file://`` lock, exclusive or shared (:class:`LockFile`, also each semaphore
slot), and the blocking handle with its waits."""

from __future__ import annotations

import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.file import inotify
from conch.backends.file.session import GATE_SUFFIX, FileSession, Hold, open_creating, try_flock
from conch.errors import LockLost
from conch.green import eventlet_patched
from conch.introspection import HolderStamp


class Gate:
    """A lock object's descriptor of its name's gate file (writer preference)."""

    __slots__ = ("fd", "held", "path")

    def __init__(self, lock_path: str) -> None:
        self.path = lock_path.removesuffix(".lock") + GATE_SUFFIX
        self.fd = -1
        self.held = False

    def take(self, mode: int, on_open: Callable[[int], object] | None) -> bool:
        """Take the gate in ``mode`` without waiting (a swept one: the file now at the path)."""
        while True:
            if self.fd < 0:
                self.fd = open_creating(self.path)
                if on_open is not None:
                    on_open(self.fd)
            if not try_flock(self.fd, mode):
                return False
            if os.fstat(self.fd).st_nlink:
                self.held = mode == fcntl.LOCK_EX
                return True
            self.close()

    def close(self) -> None:
        fd, self.fd, self.held = self.fd, -1, False
        if fd >= 0:
            os.close(fd)


TokenSource = Callable[[int, HolderStamp], int]  # draws and records the token of a locked fd


class LockFile:
    """A lock object's lock file: opened by each :meth:`attempt`, kept while held."""

    __slots__ = ("_draw_token", "_hold", "_on_lost", "_seen", "_stamp", "_statx", "fd", "gate",
                 "mode", "on_open", "path", "session", "token")

    def __init__(self, session: FileSession, key: bytes, member_id: str,
                 on_lost: LossCallback, shared: bool = False,
                 draw_token: TokenSource | None = None) -> None:
        self.session = session
        self.path = session.lock_path(key)
        self.mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        self.gate: Gate | None = None  # opened by a shared try, or an exclusive wait
        self._draw_token = draw_token
        self._stamp = _stamp(key, member_id)
        self._on_lost = on_lost
        self._hold: Hold | None = None
        self._statx = inotify.statx_buffer()  # used by one acquire or release at a time
        self._seen = 0
        self.fd = -1
        self.token: int | None = None
        self.on_open: Callable[[int], object] | None = None  # told of each new fd

    def attempt(self) -> LockFile:
        """Open the file: a context manager that closes it again unless a try took it."""
        self.token = self.on_open = None
        self._seen = self.session.seen  # before the open: a removal after it shows
        self.fd = open_creating(self.path)
        return self

    def __enter__(self) -> LockFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.token is None or exc_type is not None:
            self.token = None
            self.close()

    def watch(self, told: Callable[[int], object] | None) -> None:
        """Tell ``told`` each descriptor to watch, now and later (``None``: stop)."""
        self.on_open = told
        if told is not None:
            told(self.fd)
            if self.gate is not None and self.gate.fd >= 0:
                told(self.gate.fd)

    def queue(self) -> None:
        """An exclusive acquirer about to wait: its tries hold the gate from now on."""
        if self.mode == fcntl.LOCK_EX and self.gate is None:
            self.gate = Gate(self.path)
            self.gate.take(fcntl.LOCK_EX, self.on_open)

    def try_take(self) -> int | None:
        """One try: the token (also in ``token``), or ``None`` while taken or gated."""
        if self.gate is None and self.mode == fcntl.LOCK_EX:
            return self._take()  # not queued: the uncontended path takes the file alone
        gate = self.gate = self.gate or Gate(self.path)
        if gate.held or gate.take(self.mode, self.on_open):
            if self._take() is not None:
                gate.close()
                self.gate = None
            elif self.mode == fcntl.LOCK_SH:  # waits for the next event, blocking no writer
                fcntl.flock(gate.fd, fcntl.LOCK_UN)  # no event: the pass is instant
        return self.token

    def _take(self) -> int | None:
        """Take the file without waiting (a removed one: the file now at its path)."""
        session = self.session
        while True:
            if not try_flock(self.fd, self.mode):
                return None
            # After removals, linked is not enough: a renamed directory keeps its files.
            if inotify.linked(self.fd, self._statx) if session.seen == self._seen \
                    else inotify.at_its_path(self.fd, self.path):
                self.token = session.next_token(self.fd, self._stamp, self.mode) \
                    if self._draw_token is None else self._draw_token(self.fd, self._stamp)
                self._hold = Hold(self.fd, self.path)
                session.track(self._hold, self._on_lost, self._seen)
                return self.token
            self._close_file()
            self.fd = open_creating(self.path)
            if self.on_open is not None:
                self.on_open(self.fd)

    def waits(self, deadline: Deadline) -> Iterator[float | None]:
        self.queue()
        return retries(self, deadline)

    def release(self) -> None:
        """Free the hold; :class:`LockLost` when its file was removed while held."""
        try:
            still_linked = self.fd < 0 or inotify.linked(self.fd, self._statx)
        except OSError:  # closed meanwhile, by a coordinator that stops
            still_linked = True
        self.close()  # frees the flock and wakes the waiters
        if time.monotonic() >= self.session.next_sweep:
            self.session.sweep_soon()
        if not still_linked:
            raise LockLost(f"lock file {self.path} was removed while held (was the lock "
                           "directory cleaned up?): another process may have taken the lock")

    def close(self) -> None:
        if self.gate is not None:
            self.gate.close()
            self.gate = None
        self._close_file()

    def _close_file(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:  # before the close: a check of a closed hold reports nothing
            self.session.holds.discard(hold)
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def wait_in_kernel(self) -> None:
        """Queue, then wait in ``flock`` until held: on the gate, then on the file."""
        self.queue()
        while self.try_take() is None:  # granted: then check the file counts
            assert self.gate is not None
            fcntl.flock(self.fd if self.gate.held else self.gate.fd, fcntl.LOCK_EX)


class Tries(Protocol):
    """A :class:`LockFile`, or a semaphore's slots."""

    session: FileSession
    path: str  # a watched file, which the session's close opens to wake the wait
    token: int | None

    def attempt(self) -> AbstractContextManager[Tries]: ...

    def release(self) -> None: ...

    def watch(self, told: Callable[[int], object] | None) -> None: ...

    def try_take(self) -> int | None: ...

    def waits(self, deadline: Deadline) -> Iterator[float | None]: ...


@functools.lru_cache(maxsize=1024)  # a lock object per call (@synchronized) names it again
def _stamp(key: bytes, member_id: str) -> HolderStamp:
    return HolderStamp(key, member_id)


class FileLock(LockHandle):
    """The blocking handle of a lock or a permit."""

    def __init__(self, file: Tries) -> None:
        self.file = file

    def acquire(self, deadline: Deadline) -> int | None:
        with self.file.attempt() as file:
            if file.try_take() is None and not deadline.expired():
                if deadline.forever and isinstance(file, LockFile) \
                        and file.mode == fcntl.LOCK_EX and not eventlet_patched():
                    file.wait_in_kernel()
                else:
                    wait_for_events(file, deadline)
        return file.token

    def release(self) -> None:
        self.file.release()


def retries(file: Tries, deadline: Deadline) -> Iterator[float | None]:
    """Tries ``file`` until held, ``deadline`` or its session's close; yields the wait between."""
    while file.try_take() is None:
        remaining = deadline.remaining()
        if remaining == 0 or file.session.closed:
            return
        yield remaining


def wait_for_events(file: Tries, deadline: Deadline) -> None:
    watcher, waits, watches = inotify.borrow(), file.session.waits, []
    file.watch(lambda fd: watches.append(watcher.add_watch(inotify.opened(fd), inotify.FREED)))
    waits.append(file.path)  # once watched: the session's close wakes it from now on
    try:
        for remaining in file.waits(deadline):
            if watcher.wait(remaining):
                if file.try_take() is not None:  # the hand-off: the events wait for later
                    return
                watcher.read()  # then try again: a release after this read is an event
    finally:
        waits.remove(file.path)
        file.watch(None)
        inotify.give_back(watcher, watches)
