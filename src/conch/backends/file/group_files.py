"""The files of ``file://`` groups, under ``<lock directory>/.conch-groups/`` (no lock file
name starts with a dot): a directory per group holding its exact name, and a file per member,
alive while its member's process keeps an ``flock`` on it. Layout and reasons: docs/file.md.
``OSError`` is the caller's to translate."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import struct
import time
import uuid

from conch.backends.file.removal import at_its_path
from conch.backends.file.session import tried
from conch.backends.kit.naming import readable_key
from conch.errors import GroupNotEmpty, GroupNotFound

log = logging.getLogger("conch")

GROUPS_DIRECTORY = ".conch-groups"
NAME_FILE = ".name"  # the group's exact name, in its directory
MEMBER_SUFFIX = ".member"
JOINING_PREFIX = ".joining-"  # a member file being written, renamed into place when done
ABANDONED_AFTER = 60.0
"""Seconds after which a file being joined (unlocked) or a group directory being made or
deleted is one a process left by dying."""

_MEMBER_ID_LENGTH = struct.Struct("<I")  # a member file: this, the member id (UTF-8), the data


class GroupFiles:
    """The groups of a lock directory, as directories and files."""

    def __init__(self, directory: str) -> None:
        self.root = os.path.join(directory, GROUPS_DIRECTORY)

    def group_path(self, group: bytes) -> str:
        """The directory of ``group``: a readable prefix and 160 bits of its SHA-256."""
        return os.path.join(self.root, readable_key(group, 40))

    def create(self, group: bytes) -> bool:
        """Make ``group``'s directory, with its name inside, in one rename; False when it was
        there already. Made again as often as the directories above are removed meanwhile."""
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
        """Remove ``group``'s directory unless a live member is in it: renamed away first, so
        that a member joining meanwhile is seen, and the group is put back for it."""
        final = self.group_path(group)
        live = read_members(final)
        if live is None:
            raise GroupNotFound(f"group {group!r} does not exist")
        if live:
            raise GroupNotEmpty(f"group {group!r} still has {len(live)} members")
        doomed = os.path.join(self.root, f".deleting-{uuid.uuid4().hex}")
        try:
            os.rename(final, doomed)
        except FileNotFoundError:
            raise GroupNotFound(f"group {group!r} does not exist") from None
        live = read_members(doomed) or {}
        if live:  # joined since the first look
            with contextlib.suppress(OSError):  # made again meanwhile: the joiners re-join
                os.rename(doomed, final)
            raise GroupNotEmpty(f"group {group!r} still has {len(live)} members")
        shutil.rmtree(doomed, ignore_errors=True)


    def names(self) -> list[bytes]:
        """The exact name of every group; a group's directory that a crash left half made or
        half deleted a minute ago is removed on the way."""
        found = []
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.name.startswith((".creating-", ".deleting-")):
                        with contextlib.suppress(FileNotFoundError):
                            if entry.stat().st_mtime < time.time() - ABANDONED_AFTER:
                                shutil.rmtree(entry.path, ignore_errors=True)
                    elif not entry.name.startswith("."):
                        with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
                                open(os.path.join(entry.path, NAME_FILE), "rb") as name:
                            found.append(name.read())
        except FileNotFoundError:
            pass
        return found

    def members(self, group: bytes) -> dict[str, bytes] | None:
        return read_members(self.group_path(group))


def member_path(group_directory: str, member_id: str) -> str:
    """The file of member ``member_id`` in a group's directory."""
    return os.path.join(group_directory,
                        readable_key(_encoded(member_id), 40) + MEMBER_SUFFIX)


def write_member(group_directory: str, member_id: str, data: bytes) -> tuple[int, str]:
    """Put this member's file with ``data`` in place, locked on a new descriptor (replacing
    its file there, if any); the descriptor and the path. :class:`GroupNotFound` when the
    group's directory is gone."""
    joining = os.path.join(group_directory, JOINING_PREFIX + uuid.uuid4().hex)
    try:
        fd = os.open(joining, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except (FileNotFoundError, NotADirectoryError):
        raise GroupNotFound(f"group directory {group_directory} does not exist") from None
    path = member_path(group_directory, member_id)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
        encoded = _encoded(member_id)
        with open(fd, "wb", closefd=False) as member_file:  # buffered: writes it all
            member_file.write(_MEMBER_ID_LENGTH.pack(len(encoded)) + encoded + data)
        os.rename(joining, path)  # a reader sees the old data or the new, never a part
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(joining)
        if isinstance(exc, FileNotFoundError):  # the group went meanwhile
            raise GroupNotFound(f"group directory {group_directory} was removed") from None
        raise
    return fd, path


def remove_member(fd: int, path: str) -> None:
    """Leave: unlink the member's file (if still the one at ``path``), then close ``fd``."""
    try:
        if at_its_path(fd, path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)


def read_members(group_directory: str) -> dict[str, bytes] | None:
    """The data of the group's live members by id (None: no such directory); the files of
    dead members (nobody holds their flock) are removed on the way."""
    try:
        with os.scandir(group_directory) as entries:
            found = [entry.name for entry in entries]
    except (FileNotFoundError, NotADirectoryError):
        return None
    members = {}
    for name in found:
        path = os.path.join(group_directory, name)
        if name.endswith(MEMBER_SUFFIX):
            member = _read_member(path)
            if member is not None:
                members[member[0]] = member[1]
        elif name.startswith(JOINING_PREFIX):
            _remove_abandoned(path)
    return members


def _read_member(path: str) -> tuple[str, bytes] | None:
    """The member id and data of a live member's file (None: gone, or its member dead)."""
    while True:
        # Read-only: closing it is no CLOSE_WRITE, the event of a member's death.
        with contextlib.suppress(FileNotFoundError), \
                tried(path, fcntl.LOCK_SH, os.O_RDONLY) as (fd, free):
            if not free:  # its member holds it: alive
                return _decoded(path, os.pread(fd, os.fstat(fd).st_size, 0))
            if not at_its_path(fd, path):
                continue  # replaced by a join with new data, the old file closed: read anew
            os.unlink(path)  # free: its member is gone
        return None


def _remove_abandoned(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_mtime < time.time() - ABANDONED_AFTER:
            with tried(path, fcntl.LOCK_SH, os.O_RDONLY) as (_, free):
                if free:
                    os.unlink(path)


def _decoded(path: str, content: bytes) -> tuple[str, bytes] | None:
    if len(content) >= _MEMBER_ID_LENGTH.size:
        (length,) = _MEMBER_ID_LENGTH.unpack_from(content)
        start = _MEMBER_ID_LENGTH.size
        if start + length <= len(content):
            with contextlib.suppress(UnicodeDecodeError):
                member_id = content[start:start + length].decode("utf-8", "surrogatepass")
                return member_id, content[start + length:]
    log.warning("conch: %s is not a conch member file; ignored", path)
    return None


def _encoded(member_id: str) -> bytes:
    return member_id.encode("utf-8", "surrogatepass")
