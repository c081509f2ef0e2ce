"""Reporting a ``file://`` hold lost when its lock file is removed or renamed (its
directory cleaned up): the next acquirer takes a new file at the path at once. One
thread per process watches the directories with holds through inotify; see
docs/file.md, "A removed lock directory".
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable

from conch.backends.base import LossCallback
from conch.backends.file import inotify
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.session import Holds

log = logging.getLogger("conch")

_REMOVALS = inotify.DELETE | inotify.MOVED_FROM | inotify.DELETE_SELF | inotify.MOVE_SELF
_OF_THE_DIRECTORY = inotify.DELETE_SELF | inotify.MOVE_SELF | inotify.IGNORED


class Hold:
    """One hold's descriptor and path: a record per hold, so that a check racing with
    the release reports nothing, even if the lock holds again on the same fd number."""

    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path


def at_its_path(fd: int, path: str) -> bool:
    """Whether the file open as ``fd`` is linked at ``path`` (False once ``fd`` is closed)."""
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
        self.seen = 0  # batches of removal events read for the directory
        self.wd: int | None = None  # the directory's watch, kept by _Watcher
        self._holds: Holds[Hold] = Holds()

    def counts(self, fd: int, path: str, seen_before: int) -> bool:
        """Whether locked ``fd`` is the file at ``path``, for an acquire that opened it
        when :attr:`seen` was ``seen_before``: linked, and at ``path`` if removals
        were seen since (a renamed directory keeps its files linked)."""
        if self.seen == seen_before:
            return os.fstat(fd).st_nlink > 0
        return at_its_path(fd, path)

    def track(self, fd: int, path: str, on_lost: LossCallback, seen_before: int) -> Hold:
        """Track the hold of ``path`` taken on ``fd``; its loss goes to ``on_lost``."""
        unwatched = self.wd is None  # the first hold, or the directory was removed since
        if unwatched:
            _watcher().watch(self)
        hold = Hold(fd, path)
        self._holds.add(hold, on_lost)
        if unwatched or self.seen != seen_before:  # removals the thread may have missed
            self.check([hold])
        return hold

    def untrack(self, hold: Hold) -> None:
        self._holds.discard(hold)

    def check(self, holds: Iterable[Hold] | None = None, names: set[str] | None = None) -> None:
        """Report lost each of ``holds`` (``None``: all), of the files ``names`` (``None``:
        any), that is no longer at its path."""
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
        self.inotify = inotify.Inotify()
        self._mutex = threading.Lock()
        self._watching: dict[int, set[Removals]] = {}  # by watch descriptor
        forget_in_child(self)
        threading.Thread(target=self._run, name="conch-file-removals", daemon=True).start()

    def watch(self, removals: Removals) -> None:
        """Watch ``removals``'s directory (nothing when it is gone: its holds are lost)."""
        with self._mutex:
            try:
                wd = self.inotify.add_watch(removals.directory, _REMOVALS)
            except FileNotFoundError:
                return
            except OSError as exc:  # ENOSPC: fs.inotify.max_user_watches
                log.warning("cannot watch lock directory %s for removals (%s): a hold whose "
                            "file is removed is reported lost only by its release",
                            removals.directory, exc.strerror)
                return
            removals.wd = wd
            self._watching.setdefault(wd, set()).add(removals)

    def unwatch(self, removals: Removals, wd: int | None = None) -> bool:
        """Stop watching for ``removals`` (its watch ``wd``, if still that one); whether
        it was watched."""
        with self._mutex:
            if removals.wd is None or wd not in (None, removals.wd):
                return False
            wd, removals.wd = removals.wd, None
            users = self._watching.get(wd, set())
            users.discard(removals)
            if not users:
                self._watching.pop(wd, None)
                with contextlib.suppress(OSError):  # gone already, with its directory
                    self.inotify.rm_watch(wd)
            return True

    def _run(self) -> None:
        while True:
            self.inotify.wait(None)
            try:
                self._dispatch(self.inotify.read())
            except Exception:  # a loss listener's: the other holds still need watching
                log.exception("conch-file-removals: reporting a removed lock file failed")

    def _dispatch(self, events: list[inotify.Event]) -> None:
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
                if wd in whole:  # watch what is at its path now, for the holds taken there
                    if self.unwatch(removals, wd):
                        self.watch(removals)
                    removals.check()
                else:
                    removals.check(names=names[wd])

    def forget_parent(self) -> None:
        # The thread is not in the child, which must not read the parent's events.
        global _the_watcher, _watcher_mutex
        _watcher_mutex = threading.Lock()
        _the_watcher = None
        with contextlib.suppress(OSError):
            self.inotify.close()


_the_watcher: _Watcher | None = None
_watcher_mutex = threading.Lock()


def _watcher() -> _Watcher:
    global _the_watcher
    if _the_watcher is None:
        with _watcher_mutex:
            if _the_watcher is None:
                _the_watcher = _Watcher()
    return _the_watcher
