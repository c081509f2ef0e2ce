"""Liveness for the server backends: one :class:`Heartbeat` per coordinator, and
:class:`Holds`, which reports each lost hold once (docs/kit.md)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from conch.backends.base import LossCallback

log = logging.getLogger("conch")

H = TypeVar("H")


class Holds(Generic[H]):
    """The holds a session keeps alive, each with its loss callback. Thread-safe."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._holds: dict[H, LossCallback] = {}

    def add(self, hold: H, on_lost: LossCallback) -> None:
        with self._mutex:
            self._holds[hold] = on_lost

    def discard(self, hold: H) -> None:
        with self._mutex:
            self._holds.pop(hold, None)

    def snapshot(self) -> list[H]:
        with self._mutex:
            return list(self._holds)

    def lose(self, hold: H, reason: str) -> None:
        """Report ``hold`` lost (once) and stop tracking it."""
        with self._mutex:
            on_lost = self._holds.pop(hold, None)
        if on_lost is not None:
            on_lost(reason)

    def lose_all(self, reason: str) -> None:
        """Report every hold lost: the session ended."""
        with self._mutex:
            lost, self._holds = self._holds, {}
        for on_lost in lost.values():
            on_lost(reason)


class Heartbeat:
    """Calls ``beat`` every ``interval`` seconds on a daemon thread until :meth:`stop`; an
    exception from ``beat`` is logged (``beat`` decides when failures lose the holds)."""

    def __init__(self, name: str, interval: float, beat: Callable[[], None]) -> None:
        self.interval = interval
        self._beat = beat
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and wait for a beat in progress to end."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self._stopped.wait(max(0.0, next_beat - time.monotonic())):
            next_beat += self.interval
            try:
                self._beat()
            except Exception:
                log.warning("%s: heartbeat failed", self._thread.name, exc_info=True)
            now = time.monotonic()
            if next_beat < now:  # a slow beat: do not try to catch up in a burst
                next_beat = now + self.interval
