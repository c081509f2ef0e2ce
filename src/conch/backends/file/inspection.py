"""Who holds the ``file://`` locks of a directory, read without trying them (a try would
fail a real acquire meanwhile): ``/proc/locks`` names the holding pid and the file,
whose hold record (:data:`~conch.backends.file.tokens.HOLD_RECORD`) says the rest.
Waiters are not reported: a timed waiter appears nowhere. ``OSError`` is the caller's.
"""

from __future__ import annotations

import os

from conch.backends.file.tokens import HOLD_RECORD
from conch.introspection import HolderInfo, LockInfo, read_stamp

_READ_AT_MOST = 512 * 1024  # the record and the stamp of any name (64 KiB, JSON-escaped)

FileId = tuple[int, int, int]
"""A file's device major, minor and inode number, as ``/proc/locks`` names it."""


def held_files() -> dict[FileId, int]:
    """The files with an exclusive ``flock`` now, each with the pid that took it."""
    with open("/proc/locks") as table:
        lines = table.read().splitlines()
    held: dict[FileId, int] = {}
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146867 0 EOF"; waiters have "->" after "1:".
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        major, minor, inode = fields[5].split(":")
        held[(int(major, 16), int(minor, 16), int(inode))] = int(fields[4])
    return held


def describe(path: str, key: bytes) -> LockInfo:
    """Lock ``key``, whose lock file is ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LockInfo(key, None)
    try:
        kernel_pid = held_files().get(_file_id(os.fstat(fd)))
        if kernel_pid is None:
            return LockInfo(key, None)
        lock = _read(fd)
    finally:
        os.close(fd)
    if lock is None or lock.key != key or lock.holder is None:
        return LockInfo(key, HolderInfo(pid=kernel_pid))  # a holder from before stamps
    return LockInfo(key, lock.holder)


def held_locks(directory: str) -> list[LockInfo]:
    """The held locks of ``directory`` whose holder left a stamp (every conch holder does)."""
    held, found = held_files(), []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.endswith(".lock"):
                    continue
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:  # swept meanwhile
                    continue
                try:
                    lock = _read(fd) if _file_id(os.fstat(fd)) in held else None
                finally:
                    os.close(fd)
                if lock is not None:
                    found.append(lock)
    except FileNotFoundError:  # removed (cleaned up): it holds nothing
        return []
    return found


def _read(fd: int) -> LockInfo | None:
    """The lock whose file is ``fd``, from its hold record; None without a stamp."""
    data = os.pread(fd, _READ_AT_MOST, 0)
    stamp = read_stamp(data[HOLD_RECORD.size:])
    if stamp is None:
        return None
    token, since_us, pid = HOLD_RECORD.unpack_from(data)
    return LockInfo(stamp.key, stamp.holder(token=token, pid=pid, acquired_at=since_us / 1e6))


def _file_id(status: os.stat_result) -> FileId:
    return os.major(status.st_dev), os.minor(status.st_dev), status.st_ino
