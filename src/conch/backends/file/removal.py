"""Whether a ``file://`` hold's file is still linked (at its path): a file removed or renamed
(its directory cleaned up) no longer counts, and its hold is lost. See docs/file.md."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import struct

_STATX_NLINK, _AT_EMPTY_PATH = 0x4, 0x1000  # <linux/stat.h>, <fcntl.h>
_NLINK = struct.Struct("=I")  # struct statx's stx_nlink, at offset 16
_statx = getattr(ctypes.CDLL(None, use_errno=True), "statx", None)  # glibc >= 2.28


@dataclasses.dataclass(eq=False, slots=True)
class Hold:
    """A record per hold (compared by identity), so that a check racing with the release
    reports nothing, even when the lock holds again on a descriptor of the same number."""

    fd: int
    path: str


def statx_buffer() -> ctypes.Array[ctypes.c_char]:
    """A ``struct statx`` for :func:`linked`, one per thread at a time."""
    return ctypes.create_string_buffer(256)


def linked(fd: int, buffer: ctypes.Array[ctypes.c_char]) -> bool:
    """True while the file open as ``fd`` has a link (OSError when ``fd`` is closed): the
    link count alone, not the times (docs/file.md, "Link counts without times")."""
    if _statx is not None and not _statx(fd, b"", _AT_EMPTY_PATH, _STATX_NLINK, buffer):
        return bool(_NLINK.unpack_from(buffer, 16)[0])
    return os.fstat(fd).st_nlink > 0  # no statx (old libc or kernel, a seccomp filter)


def at_its_path(fd: int, path: str) -> bool:
    """Whether the file open as ``fd`` is linked at ``path`` (False once ``fd`` is closed)."""
    try:
        held, linked = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return held.st_nlink > 0 and (held.st_ino, held.st_dev) == (linked.st_ino, linked.st_dev)
