"""Lock metrics and traces through OpenTelemetry's API: near-free when nobody collects them.

conch only *reports* through ``opentelemetry-api`` (``pip install conch[otel]``);
the application chooses an SDK and exporter (Prometheus, OTLP, ...). Without the
API installed conch measures nothing; with it but no SDK configured, a lock skips
its instruments (conch looks for a configured provider at most once a second, or
at once after :func:`refresh`). docs/metrics.md has the details and a Prometheus
example.

Instruments (meter ``conch``), each with attributes ``conch.backend`` (the URL
scheme) and ``conch.lock`` (a *bounded* label for the lock name, see
:func:`name_label`); renewals are per backend only:

=================================  =========  ========================================
``conch.lock.wait``                histogram  seconds an acquire waited; ``conch.outcome``
                                              is ``acquired``, ``timeout`` or ``error``
``conch.lock.hold``                histogram  seconds a hold lasted (until release or loss)
``conch.lock.acquisitions``        counter    holds taken
``conch.lock.acquire_failures``    counter    acquires that returned ``False`` (``conch.reason``
                                              ``timeout``) or raised (``error``)
``conch.lock.losses``              counter    holds lost before their release
``conch.lock.renewals``            counter    holds a heartbeat renewed or confirmed alive
``conch.lock.renewal_failures``    counter    holds a heartbeat failed to renew
=================================  =========  ========================================

The counters are observable (read when the SDK collects), so an acquire costs the
SDK two histogram records, not four calls. With a tracer provider configured,
each acquire is also a span ``conch.acquire`` (its duration is the wait) with the
same attributes, its outcome and its token.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from conch.backends.base import Deadline, LockHandle, LossCallback

try:
    from opentelemetry import metrics as _otel_metrics
    from opentelemetry import trace as _otel_trace
except ImportError:  # conch works without it: nothing is measured
    _otel_metrics = None  # type: ignore[assignment]
    _otel_trace = None  # type: ignore[assignment]

ENABLED = _otel_metrics is not None
"""True when ``opentelemetry-api`` is installed (coordinators then meter their locks)."""

MAX_LABELS = 100
"""Distinct ``conch.lock`` values one process reports; later ones are reported as ``other``."""
OTHER = "other"
# Lock waits and holds span microseconds to minutes: the SDK's default buckets are
# meant for milliseconds, so advise these (the API ignores them before 1.23).
_SECONDS_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
                    300.0)
_LABEL_END = re.compile(r"[-_/:.\s\d]")

_labels: set[str] = set()
_labels_mutex = threading.Lock()


def name_label(name: str | bytes) -> str:
    """The default ``conch.lock`` label of lock ``name``: the text before its first
    separator (``- _ / : .``, space) or digit, so ``vnf-42`` and ``vnf-7`` are both
    ``vnf``. Past :data:`MAX_LABELS` distinct labels a process reports ``other``, so a
    label never grows without bound. Pass ``metric_label=`` to ``Coordinator.lock`` to
    choose one (a name template such as ``"vnf-{id}"`` is a good one)."""
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    return bounded(_LABEL_END.split(text, maxsplit=1)[0][:64] or OTHER)


def bounded(label: str) -> str:
    """``label``, or ``other`` once this process has reported :data:`MAX_LABELS` others."""
    if label in _labels:
        return label
    with _labels_mutex:
        if len(_labels) < MAX_LABELS:
            _labels.add(label)
            return label
    return OTHER


class _Series:
    """What conch reports for one (backend, label): its attribute sets, built once, and
    its event counts. The counts are plain integers read by observable counters when
    the SDK collects: an SDK counter's ``add()`` costs about 11 µs, as much as the rest
    of an uncontended ``file://`` acquire."""

    def __init__(self, backend: str, label: str) -> None:
        self.lock = {"conch.backend": backend, "conch.lock": label}
        self.acquired = {**self.lock, "conch.outcome": "acquired"}
        self.timed_out = {**self.lock, "conch.outcome": "timeout"}
        self.failed = {**self.lock, "conch.outcome": "error"}
        self.mutex = threading.Lock()
        self.acquisitions = self.timeouts = self.errors = self.losses = 0


_series: dict[tuple[str, str], _Series] = {}
_renewals: dict[str, list[int]] = {}  # backend → [renewed, failed]
_counts_mutex = threading.Lock()


def _series_of(backend: str, label: str) -> _Series:
    with _counts_mutex:
        found = _series.get((backend, label))
        if found is None:
            found = _series[backend, label] = _Series(backend, label)
        return found


class _Instruments:
    """conch's instruments, made once from the global meter (a proxy until an SDK is set)."""

    def __init__(self) -> None:
        assert _otel_metrics is not None and _otel_trace is not None
        from importlib.metadata import PackageNotFoundError, version

        try:
            conch_version = version("conch")
        except PackageNotFoundError:
            conch_version = ""
        meter = _otel_metrics.get_meter("conch", conch_version)
        self.tracer = _otel_trace.get_tracer("conch", conch_version)
        self.wait = _histogram(meter, "conch.lock.wait", "Seconds an acquire waited")
        self.hold = _histogram(meter, "conch.lock.hold", "Seconds a hold lasted")
        counters = {
            "conch.lock.acquisitions": ("Holds taken", _lock_counts("acquisitions")),
            "conch.lock.acquire_failures": ("Acquires that timed out or failed",
                                            _failure_counts),
            "conch.lock.losses": ("Holds lost before their release", _lock_counts("losses")),
            "conch.lock.renewals": ("Holds a heartbeat renewed or confirmed alive",
                                    _renewal_counts(0)),
            "conch.lock.renewal_failures": ("Holds a heartbeat failed to renew",
                                            _renewal_counts(1)),
        }
        for name, (description, observe) in counters.items():
            meter.create_observable_counter(name, callbacks=[observe], description=description)


def _histogram(meter: Any, name: str, description: str) -> Any:
    try:
        return meter.create_histogram(name, unit="s", description=description,
                                      explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
    except TypeError:  # opentelemetry-api before 1.23
        return meter.create_histogram(name, unit="s", description=description)


def _lock_counts(count: str) -> Callable[[Any], Iterator[Any]]:
    def observe(options: Any) -> Iterator[Any]:
        assert _otel_metrics is not None
        with _counts_mutex:
            every = list(_series.values())
        for series in every:
            yield _otel_metrics.Observation(getattr(series, count), series.lock)
    return observe


def _failure_counts(options: Any) -> Iterator[Any]:
    assert _otel_metrics is not None
    with _counts_mutex:
        every = list(_series.values())
    for series in every:
        for reason, count in (("timeout", series.timeouts), ("error", series.errors)):
            yield _otel_metrics.Observation(count, {**series.lock, "conch.reason": reason})


def _renewal_counts(index: int) -> Callable[[Any], Iterator[Any]]:
    def observe(options: Any) -> Iterator[Any]:
        assert _otel_metrics is not None
        with _counts_mutex:
            counts = [(backend, both[index]) for backend, both in _renewals.items()]
        for backend, count in counts:
            yield _otel_metrics.Observation(count, {"conch.backend": backend})
    return observe


_instruments: _Instruments | None = None


def _get_instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


# Whether the application configured an SDK: until it does, a handle skips its
# instruments (the API's proxies would discard the values anyway). Asked at most
# once a second, as get_meter_provider() and get_tracer_provider() cost over 1 µs.
_RECHECK = 1.0
_recheck_at = 0.0
_metering_on = False
_tracing_on = False


def _recheck(now: float) -> None:
    global _recheck_at, _metering_on, _tracing_on
    assert _otel_metrics is not None and _otel_trace is not None
    meters = _otel_metrics.get_meter_provider()
    _metering_on = not isinstance(meters, (_otel_metrics.NoOpMeterProvider, *_PROXY_METERS))
    tracers = _otel_trace.get_tracer_provider()
    _tracing_on = not isinstance(tracers, (_otel_trace.NoOpTracerProvider,
                                           _otel_trace.ProxyTracerProvider))
    _recheck_at = now + _RECHECK


def refresh() -> None:
    """Notice at once a meter or tracer provider configured just now (else conch notices
    within a second)."""
    global _recheck_at
    _recheck_at = 0.0


try:  # the API's default provider, a proxy until an SDK is set (not exported)
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _PROXY_METERS: tuple[type, ...] = (_ProxyMeterProvider,)
except ImportError:  # another API version: meter always (correct, a little slower)
    _PROXY_METERS = ()


def record_renewals(backend: str, renewed: int, failed: int = 0) -> None:
    """Count holds a backend's heartbeat renewed (or confirmed) and failed to renew."""
    if not ENABLED:
        return
    _get_instruments()
    with _counts_mutex:
        counts = _renewals.setdefault(backend, [0, 0])
        counts[0] += renewed
        counts[1] += failed


def metered(
    make_handle: Callable[[LossCallback], LockHandle], backend: str, label: str
) -> Callable[[LossCallback], LockHandle]:
    """``make_handle`` whose handles report to the instruments (or itself when disabled)."""
    if not ENABLED:
        return make_handle
    instruments = _get_instruments()
    series = _series_of(backend, label)
    return lambda on_lost: _MeteredHandle(make_handle, on_lost, instruments, series)


class _MeteredHandle(LockHandle):
    """A backend's lock handle, timed: wait, hold, outcome, loss."""

    __slots__ = ("_handle", "_held_since", "_instruments", "_on_lost", "_series")

    def __init__(self, make_handle: Callable[[LossCallback], LockHandle], on_lost: LossCallback,
                 instruments: _Instruments, series: _Series) -> None:
        self._instruments = instruments
        self._series = series
        self._on_lost = on_lost
        # Start time of the current hold; list.pop() is atomic, so a release and a loss
        # racing each other record the hold once.
        self._held_since: list[float] = []
        self._handle = make_handle(self._lost)

    def acquire(self, deadline: Deadline) -> int | None:
        # The uncontended path runs this on every acquire: kept flat, no extra calls.
        started = time.monotonic()
        if started >= _recheck_at:
            _recheck(started)
        if _tracing_on:
            return self._traced_acquire(deadline, started)
        if not _metering_on:
            return self._handle.acquire(deadline)
        return self._timed_acquire(deadline, started)

    def _timed_acquire(self, deadline: Deadline, started: float) -> int | None:
        series = self._series
        try:
            token = self._handle.acquire(deadline)
        except BaseException:
            self._instruments.wait.record(time.monotonic() - started, series.failed)
            with series.mutex:
                series.errors += 1
            raise
        now = time.monotonic()
        if token is None:
            self._instruments.wait.record(now - started, series.timed_out)
            with series.mutex:
                series.timeouts += 1
            return None
        self._instruments.wait.record(now - started, series.acquired)
        with series.mutex:
            series.acquisitions += 1
        self._held_since.append(now)
        return token

    def _traced_acquire(self, deadline: Deadline, started: float) -> int | None:
        with self._instruments.tracer.start_as_current_span(
            "conch.acquire", attributes=self._series.lock
        ) as span:
            token = self._timed_acquire(deadline, started) if _metering_on \
                else self._handle.acquire(deadline)
            span.set_attribute("conch.outcome", "timeout" if token is None else "acquired")
            if token is not None:
                span.set_attribute("conch.token", token)
            return token

    def release(self) -> None:
        if self._held_since:
            self._record_hold()
        self._handle.release()

    def _lost(self, reason: str) -> None:
        if self._held_since:
            self._record_hold()
        if _metering_on:
            with self._series.mutex:
                self._series.losses += 1
        self._on_lost(reason)

    def _record_hold(self) -> None:
        try:
            since = self._held_since.pop()
        except IndexError:  # a release and a loss raced: the other one recorded it
            return
        self._instruments.hold.record(time.monotonic() - since, self._series.lock)
