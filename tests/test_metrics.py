"""Lock metrics and spans through OpenTelemetry, read back with the SDK's in-memory reader."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

import conch
from conch import metrics

sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry import metrics as otel_metrics  # noqa: E402
from opentelemetry import trace as otel_trace  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

Points = dict[tuple[str, frozenset[tuple[str, object]]], object]

_READER = InMemoryMetricReader()
_SPANS = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    """The SDK, configured as an application would (once per process: the API's rule)."""
    if not isinstance(otel_metrics.get_meter_provider(), sdk_metrics.MeterProvider):
        otel_metrics.set_meter_provider(sdk_metrics.MeterProvider(metric_readers=[_READER]))
    if not isinstance(otel_trace.get_tracer_provider(), TracerProvider):
        tracing = TracerProvider()
        tracing.add_span_processor(SimpleSpanProcessor(_SPANS))
        otel_trace.set_tracer_provider(tracing)
    metrics.refresh()


def read() -> Points:
    """Every data point so far: (instrument, attributes) → sum (counters) or
    (count, sum) (histograms)."""
    points: Points = {}
    data = _READER.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset(point.attributes.items()))
                    points[key] = (point.count, point.sum) if hasattr(point, "count") \
                        else point.value
    return points


def attributes(label: str, backend: str = "memory", **more: str) -> frozenset[tuple[str, object]]:
    return frozenset({"conch.backend": backend, "conch.lock": label, **more}.items())


@pytest.fixture
def coordinator(memory_url: str) -> Iterator[conch.Coordinator]:
    with conch.connect(memory_url) as started:
        yield started


def test_an_acquire_and_release_record_wait_hold_and_acquisition(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    label = f"held{lock_name[5:]}"  # a label of its own: the reader keeps every earlier point
    with coordinator.lock(lock_name, metric_label=label):
        pass
    points = read()
    assert points[("conch.lock.acquisitions", attributes(label))] == 1
    count, waited = points[("conch.lock.wait", attributes(label, **{"conch.outcome":
                                                                    "acquired"}))]
    assert count == 1 and 0 <= waited < 1
    count, held = points[("conch.lock.hold", attributes(label))]
    assert count == 1 and 0 <= held < 1


def test_a_timed_out_acquire_counts_as_a_failure_with_its_wait(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    label = f"timeout{lock_name[5:]}"
    with coordinator.lock(lock_name, metric_label=label):
        assert not coordinator.lock(lock_name, metric_label=label).acquire(blocking=0.1)
    points = read()
    assert points[("conch.lock.acquire_failures",
                   attributes(label, **{"conch.reason": "timeout"}))] == 1
    count, waited = points[("conch.lock.wait", attributes(label, **{"conch.outcome":
                                                                    "timeout"}))]
    assert count == 1 and waited >= 0.09


def test_a_broken_hold_counts_as_a_loss_and_ends_its_hold_time(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    label = f"lost{lock_name[5:]}"
    lock = coordinator.lock(lock_name, metric_label=label)
    assert lock.acquire()
    coordinator.break_lock(lock_name)
    assert lock.lost.is_set()
    with pytest.raises(conch.LockLost):
        lock.release()
    points = read()
    assert points[("conch.lock.losses", attributes(label))] == 1
    assert points[("conch.lock.hold", attributes(label))][0] == 1  # type: ignore[index]


def test_every_acquire_is_a_span_with_its_outcome_and_token(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    _SPANS.clear()
    with coordinator.lock(lock_name, metric_label="spanned") as lock:
        token = lock.token
    [span] = [span for span in _SPANS.get_finished_spans() if span.name == "conch.acquire"]
    assert span.attributes is not None
    assert dict(span.attributes) == {"conch.backend": "memory", "conch.lock": "spanned",
                                     "conch.outcome": "acquired", "conch.token": token}


def test_the_default_label_is_the_name_up_to_its_first_separator_or_digit() -> None:
    assert [metrics.name_label(name) for name in
            ("vnf-42", "vnf-7", "lifecycle-vnf-1", "tenant/a", b"job", "7", "orders.1")] == \
        ["vnf", "vnf", "lifecycle", "tenant", "job", "other", "orders"]


def test_labels_stay_bounded_however_many_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_labels", set())
    labels = {metrics.name_label(f"name{chr(0x4e00 + n)}") for n in range(3 * metrics.MAX_LABELS)}
    assert len(labels) == metrics.MAX_LABELS + 1
    assert metrics.OTHER in labels


def test_renewals_are_counted_per_backend(redis_url: str, lock_name: str) -> None:
    before = read().get(("conch.lock.renewals", frozenset({"conch.backend": "redis"}.items())), 0)
    with conch.connect(redis_url) as coordinator, coordinator.lock(lock_name):
        threading.Event().wait(2.5)  # the test URL's TTL is 3 s: renewed every second
    after = read()[("conch.lock.renewals", frozenset({"conch.backend": "redis"}.items()))]
    assert after >= before + 2  # type: ignore[operator]


def test_conch_works_without_opentelemetry_installed(tmp_path: object) -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # makes its import fail
        "import conch, conch.metrics\n"
        "assert not conch.metrics.ENABLED\n"
        "with conch.connect('memory://') as c, c.lock('vnf-1', metric_label='vnf') as l:\n"
        "    print(l.token)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
