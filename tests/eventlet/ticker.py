"""A green thread that must keep ticking: the proof that a wait did not block eventlet's hub.

It sleeps :data:`TICK` seconds again and again and remembers the longest gap between two
ticks since :meth:`Ticker.reset`. A call that blocks the hub for a second shows as a gap of
a second, even when the call is still running when the gap is read.
"""

from __future__ import annotations

import threading
import time

TICK = 0.01
"""Seconds between ticks."""

LONGEST_GAP = 0.4
"""The longest gap a wait may cause: above what a process starved of CPU on a loaded 2-core
machine sees (0.26-0.4 s measured at load 10-12), below every blocking wait the tests make
(timed waits of 0.5 s or more, holds of 0.6 s before a hand-off)."""


class Ticker:
    """Started at once, on a daemon (green, once monkey-patched) thread."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._longest = 0.0
        threading.Thread(target=self._run, daemon=True, name="ticker").start()

    def reset(self) -> None:
        """Forget the gaps seen so far."""
        self._longest = 0.0

    @property
    def longest_gap(self) -> float:
        """The longest gap since :meth:`reset`, the one still open included."""
        return max(self._longest, time.monotonic() - self._last)

    def _run(self) -> None:
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            self._longest = max(self._longest, now - self._last)
            self._last = now
