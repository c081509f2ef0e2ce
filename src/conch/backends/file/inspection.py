"""Who holds the ``file://`` locks of a directory, read without trying them:
``/proc/locks`` names the holding pid and the file, whose hold record says the rest.
``OSError`` is the caller's to translate."""

from __future__ import annotations

import os

from conch.backends.file.session import HOLD_RECORD
from conch.introspection import HolderInfo, LockInfo, read_stamp

_READ_AT_MOST = 512 * 1024  # the record and the stamp of any name (64 KiB, JSON-escaped)


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
    """Lock ``key``, whose lock file is ``path``."""
    pid, lock = _read(path, held_files())
    if pid is None:
        return LockInfo(key, None)
    if lock is None or lock.key != key or lock.holder is None:
        return LockInfo(key, HolderInfo(pid=pid))  # a holder from before stamps
    return LockInfo(key, lock.holder)


def held_locks(directory: str) -> list[LockInfo]:
    """The held locks of ``directory`` whose holder left a stamp (every conch holder does)."""
    held, found = held_files(), []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".lock"):
                    lock = _read(entry.path, held)[1]
                    found += [] if lock is None else [lock]
    except FileNotFoundError:  # removed (cleaned up): it holds nothing
        return []
    return found


def _read(path: str, held: dict[tuple[int, int, int], int]) -> tuple[int | None, LockInfo | None]:
    """The pid holding ``path`` (None: free) and, held, the lock its hold record describes."""
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
