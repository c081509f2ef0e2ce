"""The OpenTelemetry SDK with in-memory readers, for the metrics tests of both APIs.

The API lets a process set its meter and tracer providers once: every test module
reads the same reader and span exporter, and tells its series apart by label.
"""

from __future__ import annotations

import pytest

from conch import metrics

sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry import metrics as otel_metrics  # noqa: E402
from opentelemetry import trace as otel_trace  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

Attributes = frozenset[tuple[str, object]]

READER = InMemoryMetricReader()
SPANS = InMemorySpanExporter()


def configure() -> None:
    """The SDK, configured as an application would (once per process: the API's rule)."""
    if not isinstance(otel_metrics.get_meter_provider(), sdk_metrics.MeterProvider):
        otel_metrics.set_meter_provider(sdk_metrics.MeterProvider(metric_readers=[READER]))
    if not isinstance(otel_trace.get_tracer_provider(), TracerProvider):
        tracing = TracerProvider()
        tracing.add_span_processor(SimpleSpanProcessor(SPANS))
        otel_trace.set_tracer_provider(tracing)
    metrics.refresh()


class Points:
    """Every data point so far, by (instrument, attributes)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, Attributes], float] = {}
        self.histograms: dict[tuple[str, Attributes], tuple[int, float]] = {}
        self.extremes: dict[tuple[str, Attributes], tuple[float, float]] = {}
        data = READER.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset((point.attributes or {}).items()))
                        if isinstance(point, HistogramDataPoint):
                            self.histograms[key] = (point.count, point.sum)
                            self.extremes[key] = (point.min, point.max)
                        elif isinstance(point, NumberDataPoint):
                            self.counters[key] = point.value

    def count(self, instrument: str, label: str, backend: str = "memory", **more: str) -> float:
        """A counter's value (0 when never reported)."""
        return self.counters.get((instrument, attributes(label, backend, **more)), 0)

    def histogram(self, instrument: str, label: str, backend: str = "memory",
                  **more: str) -> tuple[int, float]:
        """A histogram's (count, sum) ((0, 0) when never recorded)."""
        return self.histograms.get((instrument, attributes(label, backend, **more)), (0, 0.0))

    def least_and_most(self, instrument: str, label: str, backend: str = "memory",
                       **more: str) -> tuple[float, float]:
        """A recorded histogram's smallest and largest values."""
        return self.extremes[instrument, attributes(label, backend, **more)]

    def series(self, label: str) -> set[tuple[str, Attributes]]:
        """``label``'s series that counted something: (instrument, its other attributes)."""
        found: set[tuple[str, Attributes]] = set()
        for points in (self.counters, self.histograms):
            for (name, attrs), value in points.items():
                if ("conch.lock", label) in attrs and value not in (0, (0, 0.0)):
                    found.add((name, attrs - {("conch.lock", label)}))
        return found


def attributes(label: str, backend: str = "memory", **more: str) -> Attributes:
    return frozenset({"conch.backend": backend, "conch.lock": label, **more}.items())


def outcome(value: str) -> dict[str, str]:
    return {"conch.outcome": value}


def acquire_spans(label: str) -> list[dict[str, object]]:
    """The attributes of the finished ``conch.acquire`` spans of ``label``, in order."""
    return [dict(span.attributes or {}) for span in SPANS.get_finished_spans()
            if span.name == "conch.acquire"
            and (span.attributes or {}).get("conch.lock") == label]
