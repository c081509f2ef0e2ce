"""Lock metrics and traces through OpenTelemetry's API (``conch[otel]``): near-free when nobody
collects them. The application chooses the SDK and exporter; without one configured, a lock
skips its instruments (checked at most once a second, or at once after :func:`refresh`).
docs/metrics.md lists the instruments, their attributes and the bounded lock label."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from conch.backends.base import LockHandle, LossCallback
from conch.metrics_handles import LockMeter, MeteredHandle, Series, measuring
from conch.metrics_handles import refresh as refresh

try:
    from opentelemetry import metrics as _otel_metrics
    from opentelemetry import trace as _otel_trace
except ImportError:  # conch works without it: nothing is measured
    _otel_metrics = None  # type: ignore[assignment]
    _otel_trace = None  # type: ignore[assignment]

try:  # the API's default provider, a proxy until an SDK is set (not exported)
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _PROXY_METERS: tuple[type, ...] = (_ProxyMeterProvider,)
except ImportError:  # another API version: meter always (correct, a little slower)
    _PROXY_METERS = ()


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


def label_of(name: str | bytes, metric_label: str | None) -> str:
    """The ``conch.lock`` label of a lock: ``metric_label`` (bounded), else the
    :func:`name_label` of its ``name``."""
    return bounded(metric_label) if metric_label else name_label(name)


def bounded(label: str) -> str:
    """``label``, or ``other`` once this process has reported :data:`MAX_LABELS` others."""
    if label in _labels:
        return label
    with _labels_mutex:
        if len(_labels) < MAX_LABELS:
            _labels.add(label)
            return label
    return OTHER


_series: dict[tuple[str, str], Series] = {}
_renewals: dict[str, list[int]] = {}  # backend → [renewed, failed]
_counts_mutex = threading.Lock()


def _series_of(backend: str, label: str) -> Series:
    with _counts_mutex:
        found = _series.get((backend, label))
        if found is None:
            found = _series[backend, label] = Series(backend, label)
        return found


class Instruments:
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
            "conch.lock.acquisitions": ("Holds taken", _lock_counts("acquired")),
            "conch.lock.acquire_failures": ("Acquires that timed out or failed",
                                            _failure_counts),
            "conch.lock.losses": ("Holds lost before their release", _lock_counts("lost")),
            "conch.lock.renewals": ("Holds a heartbeat renewed or confirmed alive",
                                    _renewal_counts(0)),
            "conch.lock.renewal_failures": ("Holds a heartbeat failed to renew",
                                            _renewal_counts(1)),
        }
        for name, (description, observe) in counters.items():
            meter.create_observable_counter(name, callbacks=[observe], description=description)

    def configured(self) -> tuple[bool, bool]:
        """Whether the application configured a meter provider, and a tracer provider."""
        assert _otel_metrics is not None and _otel_trace is not None
        meters = _otel_metrics.get_meter_provider()
        tracers = _otel_trace.get_tracer_provider()
        return (not isinstance(meters, (_otel_metrics.NoOpMeterProvider, *_PROXY_METERS)),
                not isinstance(tracers, (_otel_trace.NoOpTracerProvider,
                                         _otel_trace.ProxyTracerProvider)))


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
            yield _otel_metrics.Observation(series.counts[count], series.lock)
    return observe


def _failure_counts(options: Any) -> Iterator[Any]:
    assert _otel_metrics is not None
    with _counts_mutex:
        every = list(_series.values())
    for series in every:
        for reason in ("timeout", "error"):
            yield _otel_metrics.Observation(series.counts[reason],
                                            {**series.lock, "conch.reason": reason})


def _renewal_counts(index: int) -> Callable[[Any], Iterator[Any]]:
    def observe(options: Any) -> Iterator[Any]:
        assert _otel_metrics is not None
        with _counts_mutex:
            counts = [(backend, both[index]) for backend, both in _renewals.items()]
        for backend, count in counts:
            yield _otel_metrics.Observation(count, {"conch.backend": backend})
    return observe


_instruments: Instruments | None = None


def _get_instruments() -> Instruments:
    global _instruments
    if _instruments is None:
        _instruments = Instruments()
    return _instruments


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
    instruments, series = _get_instruments(), _series_of(backend, label)
    return lambda on_lost: MeteredHandle(make_handle, on_lost, instruments, series)


def time_now() -> float | None:
    """The time now, if an acquire starting now is to be timed (an SDK is configured),
    else ``None``: cheap enough for every acquire. Only when :data:`ENABLED`."""
    now = time.monotonic()
    return now if measuring(now, _get_instruments()) else None


def lock_meter(backend: str, name: str | bytes, metric_label: str | None) -> LockMeter:
    """The meter of an asyncio lock object (:class:`conch.aio.AsyncLock`), labelled as
    :func:`metered` handles are. Only when :data:`ENABLED`."""
    return LockMeter(_get_instruments(), _series_of(backend, label_of(name, metric_label)))
