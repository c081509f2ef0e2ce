"""Waiting until a descriptor is ready or a deadline passes: ``poll``, or eventlet's green
``select`` when monkey-patched (docs/kit.md, "Waiting on a descriptor")."""

from __future__ import annotations

import math
import select
import time


class SocketWait:
    """Waits for descriptor ``fd`` to become readable."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        make_poll = getattr(select, "poll", None)  # gone under eventlet's monkey-patching
        self._poll = None if make_poll is None else make_poll()
        if self._poll is not None:
            self._poll.register(fd, select.POLLIN)

    def until(self, end: float | None) -> bool:
        """Whether the socket got ready before monotonic time ``end`` (None: no limit)."""
        if self._poll is not None:
            millis = -1 if end is None else max(0, math.ceil((end - time.monotonic()) * 1000))
            return bool(self._poll.poll(millis))
        timeout = None if end is None else max(0.0, end - time.monotonic())
        # This object rather than the integer: eventlet 0.41's select never watches
        # descriptor 0 (it tests the value for truth).
        return bool(select.select([self], [], [], timeout)[0])

    def ready(self) -> bool:
        return self.until(0.0)

    def fileno(self) -> int:
        """The descriptor, for eventlet's ``select``."""
        return self._fd
