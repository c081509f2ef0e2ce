"""The time of one uncontended ``async with lock: pass`` through conch.aio, for sanity
bounds in backend tests (the figures users compare live in ``benchmarks/``)."""

from __future__ import annotations

import asyncio
import time

import conch.aio


def uncontended_async_cycle(url: str, lock_name: str, cycles: int = 2000) -> float:
    """Seconds per cycle on ``url``, after a warm-up (connections, scripts, statements)."""

    async def main() -> float:
        async with await conch.aio.connect(url) as coordinator:
            lock = coordinator.lock(lock_name)
            for _ in range(100):
                async with lock:
                    pass
            started = time.perf_counter()
            for _ in range(cycles):
                async with lock:
                    pass
            return (time.perf_counter() - started) / cycles

    return asyncio.run(main())
