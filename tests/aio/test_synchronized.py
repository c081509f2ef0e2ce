"""``@synchronized`` on ``async def`` waits through conch.aio: no thread per waiting call."""

from __future__ import annotations

import asyncio
import threading

import conch
import conch.aio

CALLS = 50


def test_concurrent_calls_wait_in_line_without_a_thread_each(
    local_url: str, lock_name: str
) -> None:
    entered: list[int] = []
    inside = 0

    with conch.connect(local_url) as coordinator:

        @conch.synchronized(lock_name, coordinator=coordinator)
        async def heal(index: int) -> None:
            nonlocal inside
            inside += 1
            assert inside == 1, "two calls ran inside the lock at once"
            entered.append(index)
            await asyncio.sleep(0)
            inside -= 1

        async def main() -> None:
            holder = coordinator.lock(lock_name)
            assert holder.acquire()
            before = threading.active_count()
            calls = [asyncio.ensure_future(heal(index)) for index in range(CALLS)]
            await asyncio.sleep(0.3)
            added = threading.active_count() - before
            assert added <= conch.aio.threads.POOL_THREADS + 1, f"{added} threads for {CALLS}"
            holder.release()
            await asyncio.wait_for(asyncio.gather(*calls), 30)

        asyncio.run(main())
    assert entered == list(range(CALLS))


def test_an_async_coordinator_serves_both_kinds_of_function(
    local_url: str, lock_name: str
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:

            @conch.synchronized(lock_name, coordinator=coordinator)
            async def in_loop() -> bool:
                return not await coordinator.lock(lock_name).acquire(blocking=False)

            @conch.synchronized(lock_name, coordinator=coordinator)
            def in_thread() -> bool:
                probe = coordinator.coordinator.lock(lock_name)
                return not probe.acquire(blocking=False)

            assert await in_loop() is True
            assert await asyncio.get_running_loop().run_in_executor(None, in_thread) is True

    asyncio.run(main())
