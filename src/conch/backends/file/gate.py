"""Writer preference for ``file://`` shared locks, which ``flock`` lacks: a gate file beside
each lock file, held (``LOCK_EX``) by an exclusive acquirer while it waits and passed
(``LOCK_SH``, dropped at once) by each shared acquirer, which thus waits behind it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from conch.backends.file.session import GATE_SUFFIX, open_creating, try_flock


class Gate:
    """A lock object's descriptor of its name's gate file, open while it acquires."""

    __slots__ = ("fd", "held", "path")

    def __init__(self, lock_path: str) -> None:
        self.path = lock_path.removesuffix(".lock") + GATE_SUFFIX
        self.fd = -1
        self.held = False

    def take(self, mode: int, on_open: Callable[[int], object] | None) -> bool:
        """Take the gate in ``mode`` without waiting, opening it first (``on_open`` is told
        of each descriptor opened); a gate swept meanwhile no longer counts: the file now
        at the path is tried instead."""
        while True:
            if self.fd < 0:
                self.fd = open_creating(self.path)
                if on_open is not None:
                    on_open(self.fd)
            if not try_flock(self.fd, mode):
                return False
            if os.fstat(self.fd).st_nlink:
                self.held = mode == fcntl.LOCK_EX
                return True
            self.close()

    def pass_through(self) -> None:
        """Drop the shared hold of a gate just passed (no event: the pass is instant)."""
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Leave the gate: the close is the event its waiters watch for."""
        fd, self.fd, self.held = self.fd, -1, False
        if fd >= 0:
            os.close(fd)
