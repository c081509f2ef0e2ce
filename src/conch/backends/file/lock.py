"""Taking one ``file://`` lock file: what the blocking and asyncio handles share.

A :class:`LockFile` opens the name's lock file and tries its ``flock`` without
waiting; the handle decides how to wait between tries. A waiter learns that the
file may be free from inotify (``FREED``) on the file it opened. A hold taken is
recorded with the backend's :class:`~conch.backends.file.removal.Removals`, which
reports it lost if its file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from conch.backends.base import LossCallback
from conch.backends.file.inotify import ATTRIB, CLOSE_WRITE, Inotify
from conch.backends.file.removal import Hold
from conch.backends.file.tokens import open_creating
from conch.errors import BackendUnavailable
from conch.introspection import HolderStamp

if TYPE_CHECKING:
    from conch.backends.file.backend import FileBackend

FREED = CLOSE_WRITE | ATTRIB
"""The events after which a waiter tries again. Every description of a lock file is
opened for writing, so closing the holder's (a release, or the kernel closing the
files of a holder that died) is a ``CLOSE_WRITE``; an unlink (a sweep) is an
``ATTRIB``, as the link count changes. Other writers' closes only cost a retry."""


class LockFile:
    """A lock object's descriptor of its name's lock file: opened by each acquire
    (:meth:`attempt`), kept while the lock is held, closed to release it."""

    __slots__ = ("_backend", "_hold", "_on_lost", "_path", "_removals_seen", "_stamp", "fd",
                 "on_open", "token")

    def __init__(self, backend: FileBackend, path: str, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._backend = backend
        self._path = path
        self._stamp = stamp
        self._on_lost = on_lost  # told when the held file is removed from under the hold
        self._hold: Hold | None = None
        self._removals_seen = 0
        self.fd = -1
        self.token: int | None = None
        # Called with the new descriptor when the file is replaced (to watch it).
        self.on_open: Callable[[int], object] | None = None

    def attempt(self) -> LockFile:
        """Open the file for an acquire; a context manager closing it on exit (and
        resetting ``token``) unless :meth:`try_take` took the lock."""
        self.token = None
        self.on_open = None
        self._removals_seen = self._backend.removals.seen  # before the open: see counts()
        self.fd = open_creating(self._path)
        return self

    def __enter__(self) -> LockFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.token is None or exc_type is not None:
            self.token = None
            self.close()

    def try_take(self) -> int | None:
        """Try once, without waiting: the new hold's fencing token (also in ``token``), or
        ``None`` while another description holds the file.

        A file removed while we waited (swept, or with its directory) no longer
        counts: it is dropped for the file now at the path (created, with the
        directory, if need be), which is tried in turn.
        """
        removals = self._backend.removals
        while try_lock(self.fd):
            if removals.counts(self.fd, self._path, self._removals_seen):
                self.token = self._backend.tokens.next_token(self.fd, self._stamp)
                self._hold = removals.track(self.fd, self._path, self._on_lost,
                                            self._removals_seen)
                return self.token
            self.close()
            self.fd = open_creating(self._path)
            if self.on_open is not None:
                self.on_open(self.fd)
        return None

    def release(self) -> bool:
        """Free the hold (from any thread); whether its file was still linked: False
        when it was removed while held, so the hold was lost."""
        fd = self.fd
        try:
            linked = fd < 0 or os.fstat(fd).st_nlink > 0
        except OSError:  # closed meanwhile, by a coordinator that stops
            linked = True
        self.close()
        return linked

    def close(self) -> None:
        """Close the descriptor, freeing its flock (from any thread)."""
        hold, self._hold = self._hold, None
        if hold is not None:  # before the close: a check of a closed hold reports nothing
            self._backend.removals.untrack(hold)
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def try_lock(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` if nobody else holds one (true also when ``fd``
    holds it already)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


IDLE_INOTIFY = 8
"""Inotify instances a process keeps for its next waits."""

# Closing an inotify instance once a watch was removed makes the kernel wait for a
# grace period (about 16 ms here): a waiter that just got its lock would wait for it.
# So instances are kept (without watches) for the next wait instead of closed.
_idle: list[Inotify] = []
_idle_mutex = threading.Lock()


def borrow_inotify() -> Inotify:
    """A non-blocking inotify instance without watches, for a wait (give it back with
    :func:`give_back_inotify`), or :class:`BackendUnavailable` when the user has none left."""
    with _idle_mutex:
        if _idle:
            return _idle.pop()
    try:
        return Inotify()
    except OSError as exc:
        if exc.errno == errno.EMFILE:
            raise BackendUnavailable(
                "no inotify instance left for a wait; raise fs.inotify.max_user_instances"
            ) from None
        raise


def give_back_inotify(instance: Inotify, watches: Iterable[int]) -> None:
    """The wait is over: remove its ``watches`` and keep ``instance`` for the next one."""
    for wd in watches:
        with contextlib.suppress(OSError):  # removed already: its file is gone
            instance.rm_watch(wd)
    while instance.read():  # drop the events left, such as those of the removal
        pass
    with _idle_mutex:
        if len(_idle) < IDLE_INOTIFY:
            _idle.append(instance)
            return
    instance.close()


def _forget_idle_in_child() -> None:
    # A forked child shares its parent's instances: it must not read their events.
    global _idle_mutex
    _idle_mutex = threading.Lock()
    while _idle:
        _idle.pop().close()


os.register_at_fork(after_in_child=_forget_idle_in_child)


def watch(inotify: Inotify, fd: int) -> int:
    """Watch the file open as ``fd`` for ``FREED``; the watch descriptor."""
    # /proc/self/fd resolves to the file we opened even once it is unlinked.
    return int(inotify.add_watch(f"/proc/self/fd/{fd}", FREED))
