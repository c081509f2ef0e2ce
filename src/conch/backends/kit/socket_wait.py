"""Waiting on the caller's thread for a socket (or any pollable descriptor: inotify's) to be
ready, until a deadline.

``poll`` where the process has it: it waits without the GIL and takes any descriptor
number. A process monkey-patched by eventlet (as Cinder, Manila and Tacker run) has no
``select.poll``; there the wait is the patched ``select.select``, which parks only the
calling green thread while eventlet's hub runs the others. The choice is made when a
:class:`SocketWait` is made, not when this module is imported, so a process patched after
importing conch still gets the green wait.
"""

from __future__ import annotations

import math
import select
import time


class _FileNo:
    """A descriptor as an object with ``fileno()``: eventlet 0.41's ``select`` never
    watches a descriptor passed as the integer 0 (it tests the value for truth)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


class SocketWait:
    """Waits for descriptor ``fd`` to become readable (or, ``writing``, writable)."""

    def __init__(self, fd: int, writing: bool = False) -> None:
        self._writing = writing
        self._watched = [_FileNo(fd)]
        make_poll = getattr(select, "poll", None)  # gone under eventlet's monkey-patching
        self._poll = None if make_poll is None else make_poll()
        if self._poll is not None:
            self._poll.register(fd, select.POLLOUT if writing else select.POLLIN)

    def until(self, end: float | None) -> bool:
        """Wait until the socket is ready (True) or monotonic time ``end`` passes (False;
        ``None``: no limit)."""
        if self._poll is not None:
            millis = -1 if end is None else max(0, math.ceil((end - time.monotonic()) * 1000))
            return bool(self._poll.poll(millis))
        timeout = None if end is None else max(0.0, end - time.monotonic())
        if self._writing:
            return bool(select.select([], self._watched, [], timeout)[1])
        return bool(select.select(self._watched, [], [], timeout)[0])

    def ready(self) -> bool:
        """True when the socket is ready now (no wait)."""
        return self.until(0.0)
