"""Who holds ``file://`` locks (from ``/proc/locks`` and hold records) and who is in a group
(``OSError``: the caller's to translate)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time

from conch.backends.file.inotify import at_its_path
from conch.backends.file.session import HOLD_RECORD, tried
from conch.introspection import HolderInfo, LockInfo, read_stamp

log = logging.getLogger("conch")

_READ_AT_MOST = 512 * 1024  # a record and any name's stamp
MEMBER_SUFFIX = ".member"
JOINING_PREFIX = ".joining-"  # a member file being written
ABANDONED_AFTER = 60.0  # s: a joining file, a group being made or deleted
MEMBER_ID_LENGTH = struct.Struct("<I")  # a member file: this, the member id, the data


def held_files() -> dict[tuple[int, int, int], int]:
    """The files (device major, minor, inode) with an exclusive ``flock``, and its pid."""
    held = {}
    with open("/proc/locks") as table:
        for line in table.read().splitlines():
            # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146867 0 EOF"; a waiter has "->" after "1:"
            fields = line.split()
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE":
                major, minor, inode = fields[5].split(":")
                held[(int(major, 16), int(minor, 16), int(inode))] = int(fields[4])
    return held


def describe(path: str, key: bytes) -> LockInfo:
    pid, lock = _read(path, held_files())
    if pid is None:
        return LockInfo(key, None)
    if lock is None or lock.key != key or lock.holder is None:
        return LockInfo(key, HolderInfo(pid=pid))  # a holder from before stamps
    return LockInfo(key, lock.holder)


def held_locks(directory: str) -> list[LockInfo]:
    """The held locks of ``directory`` whose holder left a stamp."""
    held, found = held_files(), []
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(".lock") and (lock := _read(entry.path, held)[1]):
                found.append(lock)
    return found


def _read(path: str, held: dict[tuple[int, int, int], int]) -> tuple[int | None, LockInfo | None]:
    """The pid holding ``path`` (None: free) and its hold record's lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # swept meanwhile
        return None, None
    try:
        status = os.fstat(fd)
        pid = held.get((os.major(status.st_dev), os.minor(status.st_dev), status.st_ino))
        data = b"" if pid is None else os.pread(fd, _READ_AT_MOST, 0)
    finally:
        os.close(fd)
    stamp = read_stamp(data[HOLD_RECORD.size:])
    if stamp is None:
        return pid, None
    token, since_us, holder_pid = HOLD_RECORD.unpack_from(data)
    return pid, LockInfo(stamp.key, stamp.holder(token=token, pid=holder_pid,
                                                 acquired_at=since_us / 1e6))


def read_members(group_directory: str) -> dict[str, bytes] | None:
    """The live members' data by id (None: no group); removes dead members' files."""
    try:
        with os.scandir(group_directory) as entries:
            found = [entry.name for entry in entries]
    except (FileNotFoundError, NotADirectoryError):
        return None
    members = {}
    for name in found:
        path = os.path.join(group_directory, name)
        if name.endswith(MEMBER_SUFFIX) and (member := _read_member(path)) is not None:
            members[member[0]] = member[1]
        elif name.startswith(JOINING_PREFIX):
            _remove_abandoned(path)
    return members


def _read_member(path: str) -> tuple[str, bytes] | None:
    while True:
        # Read-only: closing it is no CLOSE_WRITE.
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
    start = MEMBER_ID_LENGTH.size
    end = start + MEMBER_ID_LENGTH.unpack_from(content)[0] if len(content) >= start else -1
    if start <= end <= len(content):
        with contextlib.suppress(UnicodeDecodeError):
            return content[start:end].decode("utf-8", "surrogatepass"), content[end:]
    log.warning("conch: %s is not a conch member file; ignored", path)
    return None
