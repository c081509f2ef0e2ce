"""``file://`` groups: a directory per group under ``.conch-groups/``, a file per member,
alive while its process holds an ``flock`` on it (docs/file.md)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

from conch.backends.base import GroupStore, LossCallback
from conch.backends.file import inotify, inspection
from conch.backends.file.inspection import read_members
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.naming import readable_key
from conch.errors import GroupNotEmpty, GroupNotFound

log = logging.getLogger("conch")

NAME_FILE = ".name"
_GONE = inotify.DELETE_SELF | inotify.MOVE_SELF
_OF_MEMBERS = inotify.CLOSE_WRITE | inotify.MOVED_TO | inotify.DELETE | inotify.MOVED_FROM | _GONE
_OF_ENTRIES = inotify.CREATE | inotify.MOVED_TO | _GONE  # a directory above: what it holds


class _Joined(NamedTuple):
    fd: int
    path: str
    on_lost: LossCallback


class FileGroupStore(GroupStore):
    """The groups of one ``file://`` backend's lock directory."""

    poll_interval = 10.0  # a read now and then covers lost watches

    def __init__(self, directory: str, member_id: str) -> None:
        self.root = os.path.join(directory, ".conch-groups")  # no lock file starts with a dot
        self._above = (self.root, directory, os.path.dirname(directory))
        self._member_id = member_id
        self._mutex = threading.Lock()
        self._joined: dict[bytes, _Joined] = {}
        self._subscribers: dict[bytes, list[Callable[[], None]]] = {}
        self._watched: dict[int, str] = {}  # inotify watch → its directory
        forget_in_child(self)

    def group_path(self, group: bytes) -> str:
        return os.path.join(self.root, readable_key(group, 40))

    def create(self, group: bytes) -> bool:
        """Make ``group``'s directory, its name inside, in one rename (False: there)."""
        final = self.group_path(group)
        while not os.path.isdir(final):
            staging = os.path.join(self.root, f".creating-{uuid.uuid4().hex}")
            try:
                with contextlib.suppress(FileExistsError):  # made, then removed again
                    os.makedirs(self.root, exist_ok=True)  # with the lock directory, if removed
                os.mkdir(staging)
                with open(os.path.join(staging, NAME_FILE), "xb") as name_file:
                    name_file.write(group)
                os.rename(staging, final)
                return True
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # made meanwhile
                    return False
                if exc.errno != errno.ENOENT:
                    raise
        return False

    def delete(self, group: bytes) -> None:
        """Remove ``group``'s directory unless a member is in it (renamed away first, and back
        when one joined meanwhile)."""
        final = self.group_path(group)
        doomed = os.path.join(self.root, f".deleting-{uuid.uuid4().hex}")
        live = read_members(final)
        if live is None:
            raise GroupNotFound(f"group {group!r} does not exist")
        if not live:
            try:
                os.rename(final, doomed)
            except FileNotFoundError:
                raise GroupNotFound(f"group {group!r} does not exist") from None
            if live := read_members(doomed) or {}:  # joined since the first look
                with contextlib.suppress(OSError):  # made again meanwhile: the joiners re-join
                    os.rename(doomed, final)
        if live:
            raise GroupNotEmpty(f"group {group!r} still has {len(live)} members")
        shutil.rmtree(doomed, ignore_errors=True)

    def names(self) -> list[bytes]:
        """Every group's name; removes a crash's half-made or half-deleted one."""
        found = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith((".creating-", ".deleting-")):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < time.time() - inspection.ABANDONED_AFTER:
                            shutil.rmtree(entry.path, ignore_errors=True)
                elif not entry.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
                            open(os.path.join(entry.path, NAME_FILE), "rb") as name:
                        found.append(name.read())
        return found

    def members(self, group: bytes) -> dict[str, bytes] | None:
        return read_members(self.group_path(group))

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        with self._mutex:
            fd, path = _write_member(self.group_path(group), self._member_id, data)
            replaced = self._joined.get(group)
            self._joined[group] = _Joined(fd, path, on_lost)
            self._watch()
            if removed := not inotify.at_its_path(fd, path):  # the group went before it was watched
                del self._joined[group]
                self._watch()
        if replaced is not None:
            os.close(replaced.fd)  # renamed over already
        if removed:
            os.close(fd)
            raise GroupNotFound(f"group {group!r} was deleted as this member joined")

    def leave(self, group: bytes) -> bool:
        with self._mutex:
            joined = self._joined.pop(group, None)
            self._watch()
        if joined is not None:
            _remove_member(joined.fd, joined.path)
        return joined is not None

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
        with self._mutex:
            joined, self._joined, self._subscribers = self._joined, {}, {}
            self._watch()  # none left
        for membership in joined.values():
            with contextlib.suppress(OSError):
                _remove_member(membership.fd, membership.path)

    def forget_parent(self) -> None:
        """A forked child is in none of its parent's groups."""
        self._mutex, self._watched = threading.Lock(), {}
        for membership in self._joined.values():
            os.close(membership.fd)
        self._joined, self._subscribers = {}, {}

    def _watch(self) -> None:
        """Watch the groups joined or subscribed to, only those (under ``_mutex``)."""
        needed = set()
        for group in {*self._joined, *self._subscribers}:
            needed.update(self._watch_group(self.group_path(group)))
        for wd in [wd for wd in self._watched if wd not in needed]:
            del self._watched[wd]
            inotify.directories().remove(wd, self._changed)

    def _watch_group(self, group_path: str) -> list[int]:
        """Watch ``group_path`` or, missing, the directories above it; the watches."""
        levels = [(group_path, _OF_MEMBERS), *((path, _OF_ENTRIES) for path in self._above)]
        for _ in levels:  # again while a directory missing just now was made meanwhile
            watches: list[int] = []
            missing = []
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
        """Tell the subscribers, check this member's files, watch again what changed."""
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
            lost = [(group, joined) for group in concerned
                    if (joined := self._joined.get(group)) is not None and _removed(joined)]
            for group, _ in lost:
                del self._joined[group]
            if lost:
                self._watch()
        for _, joined in lost:
            os.close(joined.fd)
            joined.on_lost(f"its file {joined.path} was removed (was the lock directory "
                           "cleaned up?)")
        for call in calls:
            call()


def _removed(joined: _Joined) -> bool:
    """Removed (not renamed over by the same member id's other coordinator)."""
    return not inotify.at_its_path(joined.fd, joined.path) and not os.path.lexists(joined.path)


def _write_member(group_directory: str, member_id: str, data: bytes) -> tuple[int, str]:
    """Put this member's file in place, locked on the descriptor returned with its path."""
    joining = os.path.join(group_directory, inspection.JOINING_PREFIX + uuid.uuid4().hex)
    try:
        fd = os.open(joining, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except (FileNotFoundError, NotADirectoryError):
        raise GroupNotFound(f"group directory {group_directory} does not exist") from None
    encoded = member_id.encode("utf-8", "surrogatepass")
    path = os.path.join(group_directory, readable_key(encoded, 40) + inspection.MEMBER_SUFFIX)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
        with open(fd, "wb", closefd=False) as member_file:
            member_file.write(inspection.MEMBER_ID_LENGTH.pack(len(encoded)) + encoded + data)
        os.rename(joining, path)  # a reader sees the old data or the new, never a part
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(joining)
        if isinstance(exc, FileNotFoundError):  # the group went meanwhile
            raise GroupNotFound(f"group directory {group_directory} was removed") from None
        raise
    return fd, path


def _remove_member(fd: int, path: str) -> None:
    try:
        if inotify.at_its_path(fd, path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)
