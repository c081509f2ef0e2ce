"""conch.aio's metrics: each coroutine's acquire and hold, as the sync API's per thread.

The backend calls conch.aio's queue makes for its coroutines (its one-try, its wait,
giving back a hold nobody wanted) record nothing: a coroutine's acquire is one wait
sample and one outcome, from its call to its return, whoever it waited behind.
"""

from __future__ import annotations

import asyncio

import pytest

import conch
import conch.aio
from tests.aio.conftest import backend_url
from tests.conftest import BACKENDS
from tests.metrics_sdk import SPANS, Points, acquire_spans, configure, outcome

pytestmark = pytest.mark.usefixtures("fresh_metric_labels")


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    configure()


@pytest.fixture(params=[*BACKENDS, "memory-threads"])
def url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every backend, on its path of conch.aio (natively async or on threads), and
    memory:// on both."""
    return backend_url(request, str(request.param), monkeypatch)


def scheme(url: str) -> str:
    return url.split("://", 1)[0]


def labelled(what: str, lock_name: str) -> str:
    """A label of the test's own (the reader keeps every earlier point)."""
    return f"{what}{lock_name.removeprefix('test')}"


TIMEOUT = {"conch.reason": "timeout"}


def test_two_coroutines_timing_out_behind_a_hold_are_two_timeouts(url: str,
                                                                  lock_name: str) -> None:
    label = labelled("timeouts", lock_name)
    SPANS.clear()

    async def main() -> int | None:
        async with await conch.aio.connect(url) as coordinator:
            holder = coordinator.lock(lock_name, metric_label=label)
            assert await holder.acquire()
            token = holder.token
            waiting, trying = (coordinator.lock(lock_name, metric_label=label) for _ in "ab")
            assert not any(await asyncio.gather(waiting.acquire(0.2), trying.acquire(False)))
            await holder.release()
            return token

    token = asyncio.run(main())
    points, backend = Points(), scheme(url)
    assert points.count("conch.lock.acquisitions", label, backend) == 1
    assert points.count("conch.lock.acquire_failures", label, backend, **TIMEOUT) == 2
    assert points.histogram("conch.lock.wait", label, backend, **outcome("acquired"))[0] == 1
    assert points.histogram("conch.lock.wait", label, backend, **outcome("timeout"))[0] == 2
    tried, waited = points.least_and_most("conch.lock.wait", label, backend,
                                          **outcome("timeout"))
    assert waited >= 0.2 > tried
    attributes = {"conch.backend": backend, "conch.lock": label}
    assert acquire_spans(label) == [
        {**attributes, "conch.outcome": "acquired", "conch.token": token},
        {**attributes, "conch.outcome": "timeout"},
        {**attributes, "conch.outcome": "timeout"},
    ]


def test_an_acquire_waiting_for_another_member_is_one_acquired_and_no_timeout(
    url: str, lock_name: str
) -> None:
    label = labelled("contended", lock_name)

    async def main() -> None:
        async with await conch.aio.connect(url) as coordinator, \
                await conch.aio.connect(url) as other:
            held = other.lock(lock_name, metric_label=labelled("other", lock_name))
            assert await held.acquire()
            lock = coordinator.lock(lock_name, metric_label=label)
            waiter = asyncio.ensure_future(lock.acquire(30))
            await asyncio.sleep(0.3)
            await held.release()
            assert await asyncio.wait_for(waiter, 30)
            await lock.release()

    asyncio.run(main())
    points, backend = Points(), scheme(url)
    count, waited = points.histogram("conch.lock.wait", label, backend, **outcome("acquired"))
    assert count == 1 and waited >= 0.25
    attributes = frozenset({("conch.backend", backend)})
    assert points.series(label) == {  # no timeout from the one-try of the thread path
        ("conch.lock.acquisitions", attributes),
        ("conch.lock.wait", attributes | {("conch.outcome", "acquired")}),
        ("conch.lock.hold", attributes),
    }


def test_coroutines_queued_behind_each_other_each_record_their_wait_and_hold(
    url: str, lock_name: str
) -> None:
    label = labelled("queued", lock_name)

    async def main() -> None:
        async with await conch.aio.connect(url) as coordinator:
            first, second = (coordinator.lock(lock_name, metric_label=label) for _ in "ab")
            assert await first.acquire()
            waiter = asyncio.ensure_future(second.acquire(30))
            await asyncio.sleep(0.2)
            await first.release()
            assert await asyncio.wait_for(waiter, 30)
            await asyncio.sleep(0.1)
            await second.release()

    asyncio.run(main())
    points, backend = Points(), scheme(url)
    assert points.count("conch.lock.acquisitions", label, backend) == 2
    assert points.count("conch.lock.acquire_failures", label, backend, **TIMEOUT) == 0
    assert points.histogram("conch.lock.wait", label, backend, **outcome("acquired"))[0] == 2
    # The second waited behind a hold of its own coordinator: measured too.
    assert points.least_and_most("conch.lock.wait", label, backend,
                                 **outcome("acquired"))[1] >= 0.15
    count, held = points.histogram("conch.lock.hold", label, backend)
    assert count == 2 and held >= 0.25


def test_a_cancelled_acquire_records_no_outcome(url: str, lock_name: str) -> None:
    label = labelled("cancelled", lock_name)

    async def main() -> None:
        async with await conch.aio.connect(url) as coordinator:
            holder = coordinator.lock(lock_name, metric_label=label)
            assert await holder.acquire()
            waiter = asyncio.ensure_future(coordinator.lock(lock_name, metric_label=label)
                                           .acquire())
            await asyncio.sleep(0.1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            await holder.release()

    asyncio.run(main())
    attributes = frozenset({("conch.backend", scheme(url))})
    assert Points().series(label) == {
        ("conch.lock.acquisitions", attributes),
        ("conch.lock.wait", attributes | {("conch.outcome", "acquired")}),
        ("conch.lock.hold", attributes),
    }


def test_a_broken_hold_is_one_loss(url: str, lock_name: str) -> None:
    label = labelled("broken", lock_name)

    async def main() -> None:
        async with await conch.aio.connect(url) as coordinator:
            if not coordinator.capabilities.breakable:
                pytest.skip(f"{scheme(url)}:// locks cannot be broken")
            lock = coordinator.lock(lock_name, metric_label=label)
            assert await lock.acquire()
            await coordinator.break_lock(lock_name)
            await asyncio.wait_for(lock.lost.wait(), 15)  # redis: at its next renewal
            with pytest.raises(conch.LockLost):
                await lock.release()

    asyncio.run(main())
    points, backend = Points(), scheme(url)
    assert points.count("conch.lock.losses", label, backend) == 1
    assert points.histogram("conch.lock.hold", label, backend)[0] == 1


def test_a_hold_the_stop_frees_ends_once_and_is_no_loss(url: str, lock_name: str) -> None:
    label = labelled("stopped", lock_name)

    async def main() -> None:
        coordinator = await conch.aio.connect(url)
        lock = coordinator.lock(lock_name, metric_label=label)
        assert await lock.acquire()
        await asyncio.sleep(0.1)
        await coordinator.stop()
        await asyncio.wait_for(lock.lost.wait(), 5)
        with pytest.raises(conch.LockLost):
            await lock.release()

    asyncio.run(main())
    points, backend = Points(), scheme(url)
    count, held = points.histogram("conch.lock.hold", label, backend)
    assert count == 1 and held >= 0.1
    assert points.count("conch.lock.losses", label, backend) == 0  # the application ended it
