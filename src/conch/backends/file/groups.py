"""``file://`` groups: a member is a file its process keeps an ``flock`` on, so the kernel
ends the membership with the process. inotify events of the watched groups' directories
(a join, a leave, a death: the kernel's close of the member's file) wake the watchers, and
a removed file of this member is lost. See docs/file.md."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Callable

from conch.backends.base import GroupStore, LossCallback
from conch.backends.file import group_files, inotify
from conch.backends.file.removal import at_its_path
from conch.backends.kit.fork import forget_in_child
from conch.errors import GroupNotFound

log = logging.getLogger("conch")

_GONE = inotify.DELETE_SELF | inotify.MOVE_SELF
_OF_MEMBERS = inotify.CLOSE_WRITE | inotify.MOVED_TO | inotify.DELETE | inotify.MOVED_FROM | _GONE
_OF_ENTRIES = inotify.CREATE | inotify.MOVED_TO | _GONE  # a directory above: what it holds


@dataclasses.dataclass(eq=False)
class Membership:
    """This member's file in one group, locked on ``fd`` while it is in."""

    fd: int
    path: str
    on_lost: LossCallback


class FileGroupStore(group_files.GroupFiles, GroupStore):
    """The groups of one ``file://`` backend's lock directory."""

    poll_interval = 10.0  # every change is pushed; a read now and then covers lost watches

    def __init__(self, directory: str, member_id: str) -> None:
        self._directory = directory
        super().__init__(directory)
        self._member_id = member_id
        self._mutex = threading.Lock()
        self._joined: dict[bytes, Membership] = {}
        self._subscribers: dict[bytes, list[Callable[[], None]]] = {}
        self._watched: dict[int, str] = {}  # inotify watch → its directory
        forget_in_child(self)

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        # Under the mutex from the rename on: the reader thread, seeing the old file renamed
        # over, must find the new one registered, or it would report this member lost.
        with self._mutex:
            fd, path = group_files.write_member(self.group_path(group), self._member_id, data)
            replaced = self._joined.get(group)
            self._joined[group] = Membership(fd, path, on_lost)
            self._watch()
            removed = not at_its_path(fd, path)  # the group went before it was watched
            if removed:
                del self._joined[group]
                self._watch()
        if replaced is not None:
            os.close(replaced.fd)  # renamed over already
        if removed:
            os.close(fd)
            raise GroupNotFound(f"group {group!r} was deleted as this member joined")

    def leave(self, group: bytes) -> bool:
        with self._mutex:
            membership = self._joined.pop(group, None)
            self._watch()
        if membership is None:
            return False
        group_files.remove_member(membership.fd, membership.path)
        return True

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        with self._mutex:
            self._subscribers.setdefault(group, []).append(changed)
            self._watch()

        def unsubscribe() -> None:
            with self._mutex:
                subscribers = self._subscribers.get(group, [])
                if changed in subscribers:
                    subscribers.remove(changed)
                if not subscribers:
                    self._subscribers.pop(group, None)
                self._watch()
        return unsubscribe

    def close(self) -> None:
        """The backend closes: leave every group, stop watching."""
        with self._mutex:
            joined, self._joined, self._subscribers = self._joined, {}, {}
            self._watch()  # none left
        for membership in joined.values():
            with contextlib.suppress(OSError):
                group_files.remove_member(membership.fd, membership.path)

    def forget_parent(self) -> None:
        """A forked child is in none of its parent's groups: it closes its copies of the
        member files (the parent's flocks stay)."""
        self._mutex, self._watched = threading.Lock(), {}
        for membership in self._joined.values():
            os.close(membership.fd)
        self._joined, self._subscribers = {}, {}

    def _watch(self) -> None:
        """Watch the directory of each group joined or subscribed to (or, missing, those
        above it, to learn when it is made); drop the watches no longer needed (caller
        holds ``_mutex``)."""
        needed = set()
        for group in {*self._joined, *self._subscribers}:
            needed.update(self._watch_group(self.group_path(group)))
        for wd in [wd for wd in self._watched if wd not in needed]:
            del self._watched[wd]
            inotify.directories().remove(wd, self._changed)

    def _watch_group(self, group_path: str) -> list[int]:
        """Watch ``group_path``, or (missing) the directories above it up to the lock
        directory's parent (docs/file.md, "A removed group directory"); the watches."""
        levels = [(group_path, _OF_MEMBERS), *((path, _OF_ENTRIES) for path in (
            self.root, self._directory, os.path.dirname(self._directory)))]
        watches: list[int] = []
        for _ in levels:  # again while a directory missing just now was made meanwhile
            watches, missing = [], []
            for path, mask in levels:
                try:
                    watches.append(inotify.directories().add(path, mask, self._changed))
                except (FileNotFoundError, NotADirectoryError):
                    missing.append(path)
                    continue
                except OSError as exc:  # ENOSPC, EMFILE: the user's inotify limits
                    log.warning("conch: cannot watch group directory %s (%s): its watchers "
                                "read it every %s s", path, exc.strerror, self.poll_interval)
                    return watches
                self._watched[watches[-1]] = path
                if path == group_path:
                    return watches
            if not any(os.path.isdir(path) for path in missing):
                break
        return watches

    def _changed(self, wd: int, mask: int) -> None:
        """Tell the subscribers of the group whose directory had events (all of them
        after an event above the groups' directories); check this member's files there;
        watch again what was removed or made."""
        with self._mutex:
            path = self._watched.get(wd)
            if mask & inotify.IGNORED:  # the kernel removed the watch
                self._watched.pop(wd, None)
            groups = {*self._joined, *self._subscribers}
            if mask & (_GONE | inotify.IGNORED | inotify.Q_OVERFLOW) \
                    or (path is not None and not path.startswith(self.root + os.sep)):
                self._watch()
                concerned = groups
            else:
                concerned = {group for group in groups if self.group_path(group) == path}
            calls = [call for group in concerned for call in self._subscribers.get(group, [])]
            lost = [(group, membership) for group in concerned
                    if (membership := self._joined.get(group)) is not None
                    and _removed(membership)]
            for group, _ in lost:
                del self._joined[group]
            if lost:
                self._watch()
        for _, membership in lost:
            os.close(membership.fd)
            membership.on_lost(f"its file {membership.path} was removed (was the lock "
                               "directory cleaned up?)")
        for call in calls:
            call()


def _removed(membership: Membership) -> bool:
    """Whether this member's file was removed; renamed over by another coordinator with
    the same member id does not count (docs/file.md, "One member id in two coordinators")."""
    return not at_its_path(membership.fd, membership.path) \
        and not os.path.lexists(membership.path)
