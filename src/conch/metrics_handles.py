"""Lock handles that time their acquires and holds, for :mod:`conch.metrics`.

:class:`MeteredHandle` wraps a backend's blocking :class:`~conch.backends.base.LockHandle`
and :class:`AsyncMeteredHandle` its :class:`~conch.backends.base.AsyncLockHandle`. What
they record (the wait and outcome of an acquire, its span, the hold until its release,
loss or abandon, the loss count) is written once, in :class:`_Timed`, so the sync API
and :mod:`conch.aio` report the same series.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conch.backends.base import AsyncLockHandle, Deadline, LockHandle, LossCallback

if TYPE_CHECKING:
    from conch.metrics import Instruments

OUTCOMES = ("acquired", "timeout", "error")
"""The ``conch.outcome`` of an acquire that returned a token, returned ``None``, raised."""


class Series:
    """What conch reports for one (backend, label): its attribute sets, built once, and
    its event counts (``counts``: each outcome of :data:`OUTCOMES`, and ``lost``). The
    counts are plain integers read by observable counters when the SDK collects: an SDK
    counter's ``add()`` costs about 11 µs, as much as the rest of an uncontended
    ``file://`` acquire."""

    def __init__(self, backend: str, label: str) -> None:
        self.lock = {"conch.backend": backend, "conch.lock": label}
        self.outcomes = {outcome: {**self.lock, "conch.outcome": outcome}
                         for outcome in OUTCOMES}
        self.mutex = threading.Lock()
        self.counts = dict.fromkeys((*OUTCOMES, "lost"), 0)

# Whether the application configured an SDK: until it does, a handle skips its
# instruments (the API's proxies would discard the values anyway). Asked at most
# once a second, as get_meter_provider() and get_tracer_provider() cost over 1 µs.
_RECHECK = 1.0
_recheck_at = 0.0
_metering_on = False
_tracing_on = False


def _recheck(now: float, instruments: Instruments) -> None:
    global _recheck_at, _metering_on, _tracing_on
    _metering_on, _tracing_on = instruments.configured()
    _recheck_at = now + _RECHECK


def refresh() -> None:
    """Notice at once a meter or tracer provider configured just now (else conch notices
    within a second)."""
    global _recheck_at
    _recheck_at = 0.0


class _Timed:
    """The recording both wrappers share: a hold's start and end, and its loss."""

    __slots__ = ("_held_since", "_instruments", "_on_lost", "_series")

    def __init__(self, instruments: Instruments, series: Series, on_lost: LossCallback) -> None:
        self._instruments = instruments
        self._series = series
        self._on_lost = on_lost
        # Start time of the current hold; list.pop() is atomic, so a release (or an
        # abandon) and a loss racing each other record the hold once.
        self._held_since: list[float] = []

    def _lost(self, reason: str) -> None:
        """The backend's loss callback: the hold ends, lost."""
        if self._held_since:
            self._end_hold()
        if _metering_on:
            with self._series.mutex:
                self._series.counts["lost"] += 1
        self._on_lost(reason)

    def _end_hold(self) -> None:
        try:
            since = self._held_since.pop()
        except IndexError:  # a release and a loss raced: the other one recorded it
            return
        self._instruments.hold.record(time.monotonic() - since, self._series.lock)

    def _trace(self) -> tuple[Any, Any]:
        """An acquire starts: its span, current while the backend waits (so the backend's
        own spans nest in it), as (the span's scope, entered; the span)."""
        scope = self._instruments.tracer.start_as_current_span(
            "conch.acquire", attributes=self._series.lock)
        return scope, scope.__enter__()

    def _done(self, started: float, traced: tuple[Any, Any] | None, token: int | None,
              exc: BaseException | None = None) -> None:
        """An acquire started at ``started`` returned ``token`` or raised ``exc``: record
        its wait and outcome, start its hold, end its span. An acquire interrupted by a
        ``BaseException`` that is no ``Exception`` (a cancelled task, Ctrl-C) has no
        outcome: only its span records it."""
        if exc is None:
            outcome: str | None = "timeout" if token is None else "acquired"
        else:
            outcome = "error" if isinstance(exc, Exception) else None
        if outcome is not None and _metering_on:
            series = self._series
            now = time.monotonic()
            self._instruments.wait.record(now - started, series.outcomes[outcome])
            with series.mutex:
                series.counts[outcome] += 1
            if token is not None:
                self._held_since.append(now)
        if traced is not None:
            scope, span = traced
            if outcome is not None:
                span.set_attribute("conch.outcome", outcome)
            if token is not None:
                span.set_attribute("conch.token", token)
            if exc is None:
                scope.__exit__(None, None, None)
            else:
                scope.__exit__(type(exc), exc, exc.__traceback__)


class MeteredHandle(_Timed, LockHandle):
    """A backend's blocking lock handle, timed: wait, hold, outcome, loss."""

    __slots__ = ("_handle",)

    def __init__(self, make_handle: Callable[[LossCallback], LockHandle], on_lost: LossCallback,
                 instruments: Instruments, series: Series) -> None:
        super().__init__(instruments, series, on_lost)
        self._handle = make_handle(self._lost)

    def acquire(self, deadline: Deadline) -> int | None:
        # The uncontended path runs this on every acquire: kept flat, no extra calls.
        started = time.monotonic()
        if started >= _recheck_at:
            _recheck(started, self._instruments)
        if not (_metering_on or _tracing_on):
            return self._handle.acquire(deadline)
        traced = self._trace() if _tracing_on else None
        try:
            token = self._handle.acquire(deadline)
        except BaseException as exc:
            self._done(started, traced, None, exc)
            raise
        self._done(started, traced, token)
        return token

    def release(self) -> None:
        if self._held_since:
            self._end_hold()
        self._handle.release()


class AsyncMeteredHandle(_Timed, AsyncLockHandle):
    """A backend's asyncio lock handle, timed as :class:`MeteredHandle` is; an abandoned
    hold ends as a released one does."""

    __slots__ = ("_handle",)

    def __init__(self, make_handle: Callable[[LossCallback], AsyncLockHandle],
                 on_lost: LossCallback, instruments: Instruments, series: Series) -> None:
        super().__init__(instruments, series, on_lost)
        self._handle = make_handle(self._lost)

    async def acquire(self, deadline: Deadline) -> int | None:
        # As MeteredHandle.acquire, awaited (kept flat, not shared through a call).
        started = time.monotonic()
        if started >= _recheck_at:
            _recheck(started, self._instruments)
        if not (_metering_on or _tracing_on):
            return await self._handle.acquire(deadline)
        traced = self._trace() if _tracing_on else None
        try:
            token = await self._handle.acquire(deadline)
        except BaseException as exc:
            self._done(started, traced, None, exc)
            raise
        self._done(started, traced, token)
        return token

    async def release(self) -> None:
        if self._held_since:
            self._end_hold()
        await self._handle.release()

    def abandon(self) -> None:
        if self._held_since:
            self._end_hold()
        self._handle.abandon()
