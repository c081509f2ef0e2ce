"""Lock objects' timing of their acquires and holds, for :mod:`conch.metrics`.

What a lock object records (the wait and outcome of each acquire, its span, each hold
until its release, loss or the coordinator's stop, the loss count) is written once, in
:class:`LockMeter`: :class:`MeteredHandle` wraps a backend's blocking
:class:`~conch.backends.base.LockHandle` with it for :class:`conch.Lock`, and
:class:`conch.aio.AsyncLock` calls it around each coroutine's acquire, so the sync API
and :mod:`conch.aio` report the same series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, Protocol

from conch.backends.base import Deadline, LockHandle, LossCallback

OUTCOMES = ("acquired", "timeout", "error")
"""The ``conch.outcome`` of an acquire that took the lock, did not, raised."""

Acquiring = tuple[float, tuple[Any, Any] | None]
"""An acquire being timed: its start, and its span if traced (the span's scope, entered;
the span)."""


class Instruments(Protocol):
    """What a lock object records into (:class:`conch.metrics.Instruments`): OpenTelemetry's
    tracer and the wait and hold histograms, and whether the application configured them."""

    tracer: Any
    wait: Any
    hold: Any

    def configured(self) -> tuple[bool, bool]:
        """Whether a meter provider, and a tracer provider, are configured."""


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


def measuring(now: float, instruments: Instruments) -> bool:
    """Whether to time an acquire starting ``now``: an SDK is configured."""
    if now >= _recheck_at:
        _recheck(now, instruments)
    return _metering_on or _tracing_on


def refresh() -> None:
    """Notice at once a meter or tracer provider configured just now (else conch notices
    within a second)."""
    global _recheck_at
    _recheck_at = 0.0


class LockMeter:
    """What one lock object records: each acquire's wait, outcome and span, and each hold
    until it ends (by release, loss or the coordinator's stop), with the losses.

    :class:`MeteredHandle` is one, for :class:`conch.Lock`; :class:`conch.aio.AsyncLock`
    uses one directly, so that each coroutine's acquire is measured, not the backend
    calls :mod:`conch.aio.queue` makes on its behalf.
    """

    __slots__ = ("_held_since", "_instruments", "_series")

    def __init__(self, instruments: Instruments, series: Series) -> None:
        self._instruments = instruments
        self._series = series
        # Start time of the current hold; list.pop() is atomic, so a release (or an
        # abandon) and a loss racing each other record the hold once.
        self._held_since: list[float] = []

    def begin(self, started: float) -> Acquiring:
        """An acquire started at ``started``, when :func:`measuring` said so. With a
        tracer, its span starts and is current until :meth:`done` (so that spans made
        meanwhile in this context nest in it)."""
        if not _tracing_on:
            return started, None
        scope = self._instruments.tracer.start_as_current_span(
            "conch.acquire", attributes=self._series.lock)
        return started, (scope, scope.__enter__())

    def done(self, acquiring: Acquiring, acquired: bool, token: int | None = None,
             exc: BaseException | None = None) -> None:
        """The acquire :meth:`begin` returned ``acquiring`` for ended: ``acquired`` (its
        hold starts now, with fencing ``token``), not, or raising ``exc``. Records its
        wait and outcome and ends its span. An acquire interrupted by a ``BaseException``
        that is no ``Exception`` (a cancelled task, Ctrl-C) has no outcome: only its span
        records it."""
        started, traced = acquiring
        if exc is None:
            outcome: str | None = "acquired" if acquired else "timeout"
        else:
            outcome = "error" if isinstance(exc, Exception) else None
        if outcome is not None and _metering_on:
            series = self._series
            now = monotonic()
            self._instruments.wait.record(now - started, series.outcomes[outcome])
            with series.mutex:
                series.counts[outcome] += 1
            if acquired:
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

    def hold_ended(self, lost: bool) -> None:
        """The current hold ended: released (or freed by the coordinator's stop), or
        ``lost``. Recorded once, however often told."""
        if self._end_hold() and lost:
            self._count_loss()

    def _end_hold(self) -> bool:
        """Record the current hold's end, if one is being timed; whether it was."""
        if not self._held_since:
            return False
        try:
            since = self._held_since.pop()
        except IndexError:  # a release and a loss raced: the other one recorded it
            return False
        self._instruments.hold.record(monotonic() - since, self._series.lock)
        return True

    def _count_loss(self) -> None:
        if _metering_on:
            with self._series.mutex:
                self._series.counts["lost"] += 1


class MeteredHandle(LockMeter, LockHandle):
    """A backend's blocking lock handle, timed: wait, hold, outcome, loss."""

    __slots__ = ("_handle", "_on_lost")

    def __init__(self, make_handle: Callable[[LossCallback], LockHandle], on_lost: LossCallback,
                 instruments: Instruments, series: Series) -> None:
        super().__init__(instruments, series)
        self._on_lost = on_lost
        self._handle = make_handle(self._lost)

    def acquire(self, deadline: Deadline) -> int | None:
        # The uncontended path runs this on every acquire: kept flat, no extra calls.
        started = monotonic()
        if started >= _recheck_at:
            _recheck(started, self._instruments)
        if not (_metering_on or _tracing_on):
            return self._handle.acquire(deadline)
        acquiring = self.begin(started)
        try:
            token = self._handle.acquire(deadline)
        except BaseException as exc:
            self.done(acquiring, False, exc=exc)
            raise
        self.done(acquiring, token is not None, token)
        return token

    def release(self) -> None:
        if self._held_since:
            self._end_hold()
        self._handle.release()

    def _lost(self, reason: str) -> None:
        """The backend's loss callback: the hold ends, lost (a loss reported while
        acquiring counts too)."""
        self._end_hold()
        self._count_loss()
        self._on_lost(reason)
