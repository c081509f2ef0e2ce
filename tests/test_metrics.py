"""Lock metrics and spans through OpenTelemetry, read back with the SDK's in-memory reader."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

import conch
from conch import metrics
from conch.backends.memory.backend import MemoryBackend
from conch.lock import LockName
from tests.aio.sync_view import SyncLockView, SyncView
from tests.metrics_sdk import (
    SPANS,
    Points,
    acquire_spans,
    configure,
    outcome,
)

pytestmark = pytest.mark.usefixtures("fresh_metric_labels")


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    configure()


class AsyncAPI(SyncView):
    """conch.aio (natively async on memory://) with the sync API's methods the tests use."""

    def lock(self, name: LockName, metric_label: str | None = None) -> SyncLockView:
        return SyncLockView(self.aio.lock(name, metric_label))

    def break_lock(self, name: LockName) -> conch.LockInfo:
        return self.aio.coordinator.break_lock(name)


API = ["memory", "memory-async"]
"""The same tests through the sync API and through conch.aio, named as tests/contract does."""


def connect(api: str, url: str) -> conch.Coordinator | AsyncAPI:
    if api == "memory":
        return conch.connect(url)
    coordinator = AsyncAPI(url)
    coordinator.start()
    return coordinator


@pytest.fixture
def other(memory_url: str) -> Iterator[conch.Coordinator]:
    """Another member, holding what the coordinator under test then waits for."""
    with conch.connect(memory_url) as started:
        yield started


@pytest.fixture(params=API)
def api(request: pytest.FixtureRequest) -> str:
    assert MemoryBackend.capabilities.native_async  # conch.aio awaits its AsyncLockHandle
    return str(request.param)


@pytest.fixture
def coordinator(api: str, memory_url: str) -> Iterator[conch.Coordinator | AsyncAPI]:
    started = connect(api, memory_url)
    yield started
    started.stop()


def test_an_acquire_and_release_record_wait_hold_and_acquisition(
    coordinator: conch.Coordinator | AsyncAPI, lock_name: str
) -> None:
    label = f"held{lock_name[5:]}"  # a label of its own: the reader keeps every earlier point
    with coordinator.lock(lock_name, metric_label=label):
        pass
    points = Points()
    assert points.count("conch.lock.acquisitions", label) == 1
    count, waited = points.histogram("conch.lock.wait", label, **outcome("acquired"))
    assert count == 1 and 0 <= waited < 1
    count, held = points.histogram("conch.lock.hold", label)
    assert count == 1 and 0 <= held < 1
    memory = frozenset({("conch.backend", "memory")})
    assert points.series(label) == {  # and nothing else
        ("conch.lock.acquisitions", memory),
        ("conch.lock.wait", memory | {("conch.outcome", "acquired")}),
        ("conch.lock.hold", memory),
    }


def test_a_try_that_fails_counts_as_a_timeout(
    coordinator: conch.Coordinator | AsyncAPI, other: conch.Coordinator, lock_name: str
) -> None:
    label = f"tried{lock_name[5:]}"
    with other.lock(lock_name):
        assert not coordinator.lock(lock_name, metric_label=label).acquire(blocking=False)
    points = Points()
    assert points.count("conch.lock.acquire_failures", label, **{"conch.reason": "timeout"}) == 1
    assert points.histogram("conch.lock.wait", label, **outcome("timeout"))[0] == 1
    memory = frozenset({("conch.backend", "memory")})
    assert points.series(label) == {
        ("conch.lock.acquire_failures", memory | {("conch.reason", "timeout")}),
        ("conch.lock.wait", memory | {("conch.outcome", "timeout")}),
    }


def test_a_timed_out_acquire_counts_as_a_failure_with_its_wait(
    api: str, coordinator: conch.Coordinator | AsyncAPI, other: conch.Coordinator,
    lock_name: str
) -> None:
    label = f"timeout{lock_name[5:]}"
    with other.lock(lock_name):
        assert not coordinator.lock(lock_name, metric_label=label).acquire(blocking=0.1)
    points = Points()
    # One acquire, one outcome (tests/aio/test_metrics.py: whatever calls conch.aio makes).
    assert points.count("conch.lock.acquire_failures", label, **{"conch.reason": "timeout"}) == 1
    count, waited = points.histogram("conch.lock.wait", label, **outcome("timeout"))
    assert count == 1 and waited >= 0.09


def test_a_broken_hold_counts_as_a_loss_and_ends_its_hold_time(
    coordinator: conch.Coordinator | AsyncAPI, lock_name: str
) -> None:
    label = f"lost{lock_name[5:]}"
    lock = coordinator.lock(lock_name, metric_label=label)
    assert lock.acquire()
    coordinator.break_lock(lock_name)
    with pytest.raises(conch.LockLost):
        lock.release()
    points = Points()
    assert points.count("conch.lock.losses", label) == 1
    assert points.histogram("conch.lock.hold", label)[0] == 1


def test_a_hold_the_stopping_coordinator_frees_ends_once_and_is_no_loss(
    api: str, memory_url: str, lock_name: str
) -> None:
    label = f"stopped{lock_name[5:]}"
    coordinator = connect(api, memory_url)
    lock = coordinator.lock(lock_name, metric_label=label)
    assert lock.acquire()
    coordinator.stop()  # frees the hold (AsyncLockHandle.abandon() on the async path)
    with pytest.raises(conch.LockLost):
        lock.release()
    points = Points()
    assert points.histogram("conch.lock.hold", label)[0] == 1
    assert points.count("conch.lock.losses", label) == 0  # the application ended it


def test_every_acquire_is_a_span_with_its_outcome_and_token(
    coordinator: conch.Coordinator | AsyncAPI, other: conch.Coordinator, lock_name: str
) -> None:
    label = f"spanned{lock_name[5:]}"
    SPANS.clear()
    with coordinator.lock(lock_name, metric_label=label) as lock:
        token = lock.token
    with other.lock(lock_name):
        assert not coordinator.lock(lock_name, metric_label=label).acquire(blocking=False)
    assert acquire_spans(label) == [
        {"conch.backend": "memory", "conch.lock": label, "conch.outcome": "acquired",
         "conch.token": token},
        {"conch.backend": "memory", "conch.lock": label, "conch.outcome": "timeout"},
    ]


def test_a_lock_without_metric_label_is_labelled_by_its_name(
    coordinator: conch.Coordinator | AsyncAPI, lock_name: str
) -> None:
    before = Points().count("conch.lock.acquisitions", "metricsdefault")
    with coordinator.lock(f"metricsdefault-{lock_name}"):
        pass
    assert Points().count("conch.lock.acquisitions", "metricsdefault") == before + 1


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
    renewals = ("conch.lock.renewals", frozenset({"conch.backend": "redis"}.items()))
    before = Points().counters.get(renewals, 0)
    with conch.connect(redis_url) as coordinator, coordinator.lock(lock_name):
        threading.Event().wait(2.5)  # the test URL's TTL is 3 s: renewed every second
    assert Points().counters[renewals] >= before + 2


def test_conch_works_without_opentelemetry_installed(tmp_path: object) -> None:
    script = (
        "import asyncio, sys; sys.modules['opentelemetry'] = None\n"  # makes its import fail
        "import conch, conch.aio, conch.metrics\n"
        "from conch.aio.native import native_lock\n"
        "assert not conch.metrics.ENABLED\n"
        "with conch.connect('memory://') as c, c.lock('vnf-1', metric_label='vnf') as l:\n"
        "    print(l.token)\n"
        "    assert type(l._handle).__name__ == 'MemoryLock'\n"  # not wrapped
        "async def main():\n"
        "    async with await conch.aio.connect('memory://') as c:\n"
        "        assert type(native_lock(c.coordinator, 'vnf-1')._handle).__name__ == \\\n"
        "            'MemoryAsyncLock'\n"
        "        async with c.lock('vnf-1', metric_label='vnf') as l:\n"
        "            print(l.token)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "2"]
