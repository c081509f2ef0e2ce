"""Who holds the ``file://`` locks of a directory, read without disturbing them.

Trying a lock to see whether it is free would make a real ``acquire(blocking=False)``
fail meanwhile, so the kernel's table of file locks, ``/proc/locks``, answers
instead: one line per lock, with the owner's pid and the file's device and inode
(``proc(5)``). A held file's contents say the rest: its token, then the stamp the
holder wrote with it (see :meth:`conch.backends.file.tokens.Tokens.next_token`).

Waiters are not reported: a waiter with a timeout retries on inotify events and
appears nowhere, so any count would be short.
"""

from __future__ import annotations

import os

from conch.backends.file.tokens import HOLD_RECORD
from conch.errors import BackendUnavailable
from conch.introspection import HolderInfo, LockInfo, read_stamp

PROC_LOCKS = "/proc/locks"
# Enough for the record and the stamp of any name (a name of 64 KiB, JSON-escaped).
_READ_AT_MOST = 512 * 1024

FileId = tuple[int, int, int]
"""A file's device major, minor and inode number, as ``/proc/locks`` names it."""


def held_files() -> dict[FileId, int]:
    """The files with an exclusive ``flock`` now, each with the pid that took it."""
    try:
        with open(PROC_LOCKS) as table:
            lines = table.read().splitlines()
    except OSError as exc:
        raise BackendUnavailable(f"cannot read {PROC_LOCKS} to see who holds file locks: "
                                 f"{exc.strerror}") from None
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
        holder = None if kernel_pid is None else _holder(fd, key, kernel_pid)
    finally:
        os.close(fd)
    return LockInfo(key, holder)


def held_locks(directory: str) -> list[LockInfo]:
    """The held locks of ``directory`` whose holder left a stamp (every conch holder does)."""
    held = held_files()
    found = []
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
                    kernel_pid = held.get(_file_id(os.fstat(fd)))
                    if kernel_pid is not None:
                        lock = _read(fd)
                        if lock is not None:
                            found.append(lock)
                finally:
                    os.close(fd)
    except FileNotFoundError:  # removed (cleaned up): it holds nothing
        return []
    except OSError as exc:
        raise BackendUnavailable(f"cannot list lock directory {directory}: "
                                 f"{exc.strerror}") from None
    return found


def _holder(fd: int, key: bytes, kernel_pid: int) -> HolderInfo:
    lock = _read(fd)
    if lock is None or lock.key != key or lock.holder is None:
        return HolderInfo(pid=kernel_pid)  # a holder from before stamps: the kernel knows
    return lock.holder


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
