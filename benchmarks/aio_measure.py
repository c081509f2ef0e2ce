"""The asyncio measurements, each run on a fresh event loop in a process forked for it.

* **uncontended**: one coroutine times ``await acquire(); await release()`` on one name.
* **hand-off**: member 0 holds a name, a coroutine of member 1 (same loop) waits for
  it; the holder reads ``time.perf_counter_ns()`` just before its release call, the
  waiter right after its acquire returns. Then the roles swap.
* **crowd**: member 0 holds a name while ``waiters`` coroutines of member 1 wait for
  it (a lock object each); the process's threads and the server's client connections
  are sampled while they wait, then the holder releases and all of them pass through
  the lock one by one (acquire, yield to the loop, release).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

from benchmarks.aio_backends import AioSettings, Counter
from benchmarks.aio_contenders import AsyncContender, AsyncLockLike

T = TypeVar("T")
_SAMPLE_S = 0.05  # how often threads and connections are sampled while the crowd waits
_STEADY = 4  # samples in a row that must agree before the holder releases
_SETTLE_MAX_S = 5.0  # ... or after this long (a count that never settles)


@dataclasses.dataclass
class HandoffRun:
    """Release-to-acquired durations (ns) of one block's hand-offs, the first tenth not counted."""

    durations_ns: list[int]
    overlaps: int
    """Rounds where the waiter had the lock before the holder released it (must be 0)."""


@dataclasses.dataclass
class CrowdRun:
    """One crowd of waiters on one name."""

    waiters: int
    extra_threads: int
    """The most threads of the process while they waited, minus those before they came."""
    extra_connections: int | None
    """The same for the server's client connections (``None``: no server)."""
    waited_s: float
    """How long they waited before the release (until the counts were steady)."""
    through_ns: int
    """From the holder's release call to the last waiter's release returning."""
    exclusive: bool
    """No two of them (nor a waiter and the holder) held the lock at once."""


def in_loop(
    contender_class: type[AsyncContender],
    target: str,
    measurement: Callable[[AsyncContender], Awaitable[T]],
) -> T:
    """Set the contender up on a new event loop, run ``measurement``, tear it down."""

    async def main() -> T:
        contender = contender_class(target)
        await contender.setup()
        try:
            return await measurement(contender)
        finally:
            await contender.teardown()

    return asyncio.run(main())


async def cycles(iterations: int, contender: AsyncContender) -> list[int]:
    """Durations (ns) of ``iterations`` acquire+release cycles, after a tenth as many untimed."""
    lock = contender.lock(_fresh("uncontended"), 0)
    for _ in range(iterations // 10):
        await lock.acquire()
        await lock.release()
    clock = time.perf_counter_ns
    durations = [0] * iterations
    for i in range(iterations):
        start = clock()
        await lock.acquire()
        await lock.release()
        durations[i] = clock() - start
    return durations


async def handoff(holds: Sequence[float], contender: AsyncContender) -> HandoffRun:
    """One hand-off per hold (seconds), alternately from member 0 to 1 and back."""
    name = _fresh("handoff")
    locks = (contender.lock(name, 0), contender.lock(name, 1))
    clock = time.perf_counter_ns

    async def take(lock: AsyncLockLike) -> int:
        await lock.acquire()
        return clock()

    await locks[0].acquire()
    durations: list[int] = []
    overlaps = 0
    for round_, hold in enumerate(holds):
        holder, waiter = locks[round_ % 2], locks[1 - round_ % 2]
        taking = asyncio.create_task(take(waiter))
        await asyncio.sleep(hold)
        overlaps += taking.done()
        released = clock()
        await holder.release()
        durations.append(await taking - released)
    await locks[len(holds) % 2].release()
    return HandoffRun(durations[len(holds) // 10:], overlaps)


async def crowd(
    settings: AioSettings,
    connections: Callable[[], AbstractContextManager[Counter]] | None,
    contender: AsyncContender,
) -> CrowdRun:
    """``settings.waiters`` coroutines of member 1 wait for a name member 0 holds."""
    with connections() if connections else contextlib.nullcontext() as count:
        name = _fresh("crowd")
        warm_up = contender.lock(_fresh("warm-up"), 1)  # so that set-up costs are not counted
        await warm_up.acquire()
        await warm_up.release()
        holder = contender.lock(name, 0)
        await holder.acquire()

        def sample() -> tuple[int, int]:
            return len(os.listdir("/proc/self/task")), count() if count else 0

        before = sample()
        inside = 0
        exclusive = True

        async def wait(lock: AsyncLockLike) -> None:
            nonlocal inside, exclusive
            await lock.acquire()
            inside += 1
            exclusive &= inside == 1
            await asyncio.sleep(0)  # let another coroutine in, if the lock would
            inside -= 1
            await lock.release()

        tasks = [asyncio.create_task(wait(contender.lock(name, 1)))
                 for _ in range(settings.waiters)]
        started = time.monotonic()
        samples: list[tuple[int, int]] = []
        while True:
            await asyncio.sleep(_SAMPLE_S)
            samples.append(sample())
            waited = time.monotonic() - started
            steady = len(set(samples[-_STEADY:])) == 1 and len(samples) >= _STEADY
            if waited >= _SETTLE_MAX_S or (waited >= settings.settle_s and steady):
                break
        exclusive &= not any(task.done() for task in tasks)
        clock = time.perf_counter_ns
        released = clock()
        await holder.release()
        await asyncio.gather(*tasks)
        through = clock() - released
    return CrowdRun(
        waiters=settings.waiters,
        extra_threads=max(threads for threads, _ in samples) - before[0],
        extra_connections=(max(conns for _, conns in samples) - before[1]) if count else None,
        waited_s=round(waited, 3),
        through_ns=through,
        exclusive=exclusive,
    )


def _fresh(measurement: str) -> str:
    """A lock name no earlier measurement used, so no state carries over."""
    return f"aio-{measurement}-{uuid.uuid4().hex[:12]}"

