"""Telling a ``file://`` holder that its lock file was removed from under it.

A hold is a ``flock`` on the file linked at the name's path. When that file is
removed or renamed while held (its directory removed by systemd-tmpfiles, an
operator or a test's temporary directory), the next acquirer creates a new file
at the path and takes it at once: the old hold excludes nobody any more. Nothing
can prevent that, as the removed directory was the only state the processes
shared, so the holder is told, as a server backend's holder is told of an expired
lease: the hold is reported lost (``lock.lost``, ``LockLost`` on release). The
new holder's token is larger (:mod:`~conch.backends.file.tokens`), so a fenced
resource refuses the old holder.

How the holder learns it: one thread per process (started by the first hold)
watches each lock directory with holds through inotify, for removals and renames
of its files and of itself, and checks the holds of the names removed: a hold
counts while its descriptor's file is still linked at its path. An acquire that
raced with a removal checks its own hold (:meth:`Removals.track`), and a release
checks that its file is still linked, so a removal is reported even when the
release comes before the thread. The sweep removes only files it locked, so its
removals never touch a hold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable

from conch.backends.base import LossCallback
from conch.backends.file.inotify import (
    DELETE,
    DELETE_SELF,
    IGNORED,
    MOVE_SELF,
    MOVED_FROM,
    Event,
    Inotify,
)
from conch.backends.kit.session import Holds

log = logging.getLogger("conch")

_REMOVALS = DELETE | MOVED_FROM | DELETE_SELF | MOVE_SELF
_OF_THE_DIRECTORY = DELETE_SELF | MOVE_SELF | IGNORED


class Hold:
    """One hold: the descriptor holding the flock and the path its file must stay at.

    A record per hold, compared by identity: a check that raced with the release
    reports nothing (the record is no longer tracked), even when the lock object
    holds again meanwhile, maybe through a descriptor with the same number."""

    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path


def at_its_path(fd: int, path: str) -> bool:
    """True while the file open as ``fd`` is linked at ``path`` (False also once ``fd``
    is closed: a hold released meanwhile)."""
    try:
        held = os.fstat(fd)
        linked = os.stat(path)
    except OSError:
        return False
    return held.st_nlink > 0 and (held.st_ino, held.st_dev) == (linked.st_ino, linked.st_dev)


class Removals:
    """The holds of one backend's directory, checked when something is removed from it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.seen = 0
        """Batches of removal events read for this directory: an acquire that sees it
        change while it took its file checks its hold itself (the thread may have
        checked before the hold was tracked)."""
        self.wd: int | None = None  # the directory's watch; set and reset by _Watcher
        self._holds: Holds[Hold] = Holds()

    def counts(self, fd: int, path: str, seen_before: int) -> bool:
        """Whether the locked file open as ``fd`` is the lock file at ``path``, for an
        acquire that began (before opening it) when :attr:`seen` was ``seen_before``:
        linked, and at ``path`` if removals were seen since (a renamed directory keeps
        its files linked)."""
        if self.seen == seen_before:
            return os.fstat(fd).st_nlink > 0
        return at_its_path(fd, path)

    def track(self, fd: int, path: str, on_lost: LossCallback, seen_before: int) -> Hold:
        """Track the hold of lock file ``path`` taken on ``fd`` (see :meth:`counts` for
        ``seen_before``); its loss is reported through ``on_lost``."""
        unwatched = self.wd is None  # the first hold, or the directory was removed since
        if unwatched:
            _watcher().watch(self)
        hold = Hold(fd, path)
        self._holds.add(hold, on_lost)
        if unwatched or self.seen != seen_before:  # removals the thread may have missed
            self.check([hold])
        return hold

    def untrack(self, hold: Hold) -> None:
        """The hold ends (released): forget it."""
        self._holds.discard(hold)

    def check(self, holds: Iterable[Hold] | None = None, names: set[str] | None = None) -> None:
        """Report lost each of ``holds`` (all: ``None``), of the files named ``names``
        (all: ``None``), that is no longer at its path."""
        for hold in self._holds.snapshot() if holds is None else holds:
            if (names is None or os.path.basename(hold.path) in names) \
                    and not at_its_path(hold.fd, hold.path):
                self._holds.lose(hold, f"its lock file {hold.path} was removed or renamed "
                                       "(was the lock directory cleaned up?): another "
                                       "process may take the lock")

    def close(self) -> None:
        """The backend closes: stop watching its directory."""
        if _the_watcher is not None:
            _the_watcher.unwatch(self)


class _Watcher:
    """The process's inotify instance for lock directories, and the thread reading it."""

    def __init__(self) -> None:
        self._inotify = Inotify()
        self._mutex = threading.Lock()
        self._watching: dict[int, set[Removals]] = {}  # by watch descriptor
        threading.Thread(target=self._run, name="conch-file-removals", daemon=True).start()

    def watch(self, removals: Removals) -> None:
        """Watch ``removals``'s directory (nothing when it is gone: its holds are lost)."""
        with self._mutex:
            try:
                wd = self._inotify.add_watch(removals.directory, _REMOVALS)
            except FileNotFoundError:
                return
            except OSError as exc:  # ENOSPC: fs.inotify.max_user_watches
                log.warning("cannot watch lock directory %s for removals (%s): a hold whose "
                            "file is removed is reported lost only by its release",
                            removals.directory, exc.strerror)
                return
            removals.wd = wd
            self._watching.setdefault(wd, set()).add(removals)

    def unwatch(self, removals: Removals) -> None:
        """Stop watching for ``removals`` (the watch stays for its other users)."""
        with self._mutex:
            if removals.wd is not None:
                self._drop(removals, removals.wd)

    def _drop(self, removals: Removals, wd: int) -> None:
        # Under the mutex.
        removals.wd = None
        users = self._watching.get(wd, set())
        users.discard(removals)
        if not users:
            self._watching.pop(wd, None)
            with contextlib.suppress(OSError):  # gone already, with its directory
                self._inotify.rm_watch(wd)

    def _run(self) -> None:
        while True:
            self._inotify.wait(None)
            try:
                self._dispatch(self._inotify.read())
            except Exception:  # a loss listener's: the other holds still need watching
                log.exception("conch-file-removals: reporting a removed lock file failed")

    def _dispatch(self, events: list[Event]) -> None:
        names: dict[int, set[str]] = {}
        whole: set[int] = set()  # the directory itself went, or events were dropped
        for event in events:
            if event.wd == -1:
                with self._mutex:
                    whole.update(self._watching)
            elif event.mask & _OF_THE_DIRECTORY:
                whole.add(event.wd)
            else:
                names.setdefault(event.wd, set()).add(event.name)
        for wd in whole | set(names):
            with self._mutex:
                users = list(self._watching.get(wd, ()))
            for removals in users:
                removals.seen += 1
                if wd in whole:
                    self._watch_again(removals, wd)
                    removals.check()
                else:
                    removals.check(names=names[wd])

    def _watch_again(self, removals: Removals, wd: int) -> None:
        """The directory of ``removals`` was removed or moved: watch what is at its
        path now, for the holds taken there (checked by the caller)."""
        with self._mutex:
            if removals.wd != wd:
                return  # watched again already
            self._drop(removals, wd)  # a moved directory is no longer its directory
        self.watch(removals)

    def forget_in_child(self) -> None:
        """After fork: the thread is not in the child, which must not read the events."""
        with contextlib.suppress(OSError):
            self._inotify.close()


_the_watcher: _Watcher | None = None
_watcher_mutex = threading.Lock()


def _watcher() -> _Watcher:
    global _the_watcher
    if _the_watcher is None:
        with _watcher_mutex:
            if _the_watcher is None:
                _the_watcher = _Watcher()
    return _the_watcher


def forget_in_child(removals: Iterable[Removals]) -> None:
    """After fork, in the child: a new watcher for the next hold of each of ``removals``."""
    global _the_watcher, _watcher_mutex
    _watcher_mutex = threading.Lock()
    if _the_watcher is not None:
        _the_watcher.forget_in_child()
        _the_watcher = None
    for directory in removals:
        directory.wd = None
