"""Waiting: the loop keeps running, few threads, each coroutine its own deadline, FIFO."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import conch
import conch.aio
from conch.aio.threads import POOL_THREADS
from tests.aio.conftest import held_elsewhere

WAITERS = 100


def _wait_threads() -> int:
    return sum(thread.name == "conch-aio-wait" for thread in threading.enumerate())


async def _ticks_while(task: asyncio.Future[Any], period: float = 0.01) -> int:
    """How many times the loop ran a ``period`` sleep until ``task`` finished."""
    ticks = 0
    while not task.done():
        await asyncio.sleep(period)
        ticks += 1
    return ticks


@pytest.mark.timeout(120)
def test_a_hundred_waiters_cost_few_threads_keep_the_loop_running_and_enter_in_order(
    url: str, lock_name: str
) -> None:
    entered: list[int] = []

    async def take(lock: conch.aio.AsyncLock, index: int) -> None:
        async with lock:
            entered.append(index)
            await asyncio.sleep(0)

    async def main() -> None:
        async with held_elsewhere(url, lock_name) as (coordinator, holder):
            threads_before, waits_before = threading.active_count(), _wait_threads()
            tasks = [asyncio.ensure_future(take(coordinator.lock(lock_name), index))
                     for index in range(WAITERS)]
            waiting = asyncio.ensure_future(asyncio.sleep(1.0))
            ticks = await _ticks_while(waiting)
            assert ticks >= 20, f"the loop ran {ticks} times in 1 s while {WAITERS} waited"
            assert not any(task.done() for task in tasks), "a waiter entered a held lock"
            added = threading.active_count() - threads_before
            if coordinator.capabilities.native_async:  # the waits are tasks on the loop
                assert added == 0, f"{added} threads for {WAITERS} waiters"
            else:
                assert _wait_threads() - waits_before <= 1, "more than one thread waits"
                assert added <= POOL_THREADS + 1, f"{added} threads for {WAITERS} waiters"
            await holder.release()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)

    asyncio.run(main())
    assert entered == list(range(WAITERS)), "the waiters of one coordinator entered out of order"


def test_each_waiter_gives_up_at_its_own_deadline(local_url: str, lock_name: str) -> None:
    timeouts = [0.6, 0.2, 1.0, 0.4]  # the first in line does not time out first

    async def timed(lock: conch.aio.AsyncLock, seconds: float) -> float:
        started = time.monotonic()
        assert await lock.acquire(blocking=seconds) is False
        return time.monotonic() - started

    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            holder = coordinator.lock(lock_name)
            assert await holder.acquire()
            forever = asyncio.ensure_future(coordinator.lock(lock_name).acquire())
            waited = await asyncio.gather(
                *(timed(coordinator.lock(lock_name), seconds) for seconds in timeouts))
            for seconds, took in zip(timeouts, waited, strict=True):
                assert seconds * 0.9 <= took < seconds + 1.0, f"asked {seconds} s, took {took:.3f}"
            assert not forever.done()
            await holder.release()
            assert await asyncio.wait_for(forever, 5) is True

    asyncio.run(main())


def test_when_the_first_waiter_times_out_the_next_one_waits_on_the_backend(
    url: str, lock_name: str
) -> None:
    async def main() -> None:
        async with held_elsewhere(url, lock_name) as (coordinator, holder):
            first = asyncio.ensure_future(coordinator.lock(lock_name).acquire(blocking=0.3))
            await asyncio.sleep(0)
            second_lock = coordinator.lock(lock_name)
            second = asyncio.ensure_future(second_lock.acquire(blocking=30))
            assert await first is False
            await asyncio.sleep(0.3)
            released = time.monotonic()
            await holder.release()
            assert await asyncio.wait_for(second, 15) is True
            handoff = time.monotonic() - released
            bound = 1.0 if coordinator.capabilities.notify else 2.5
            assert handoff < bound, f"the second waiter took {handoff:.3f} s after the release"
            await second_lock.release()

    asyncio.run(main())


def test_a_one_try_does_not_jump_the_line(local_url: str, lock_name: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            holder = coordinator.lock(lock_name)
            assert await holder.acquire()
            waiter_lock = coordinator.lock(lock_name)
            waiter = asyncio.ensure_future(waiter_lock.acquire())
            await asyncio.sleep(0.05)
            await holder.release()
            # The released name goes to the waiter, not to a newcomer's one try.
            assert await coordinator.lock(lock_name).acquire(blocking=False) is False
            assert await asyncio.wait_for(waiter, 5) is True
            await waiter_lock.release()

    asyncio.run(main())


def test_waiters_on_many_names_do_not_hold_each_other_up(
    local_url: str, lock_name: str
) -> None:
    names = [f"{lock_name}-{index}" for index in range(5)]

    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            holders = [coordinator.lock(name) for name in names]
            for holder in holders:
                assert await holder.acquire()
            waiters = [asyncio.ensure_future(coordinator.lock(name).acquire(blocking=1.5))
                       for name in names for _ in range(3)]
            await asyncio.sleep(0.2)
            started = time.monotonic()
            for holder in reversed(holders):
                await holder.release()
            results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
            assert results.count(True) == len(names), "each release lets exactly one waiter in"
            assert time.monotonic() - started < 5

    asyncio.run(main())
