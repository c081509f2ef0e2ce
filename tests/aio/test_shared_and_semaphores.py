"""Shared locks and semaphores through conch.aio, on every backend that declares them: the
same guarantees as the sync API (each object's holds go through conch's threads)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import conch
import conch.aio


def skip_unless(url: str, capability: str) -> None:
    if not getattr(conch.Coordinator(url).capabilities, capability):
        pytest.skip(f"the backend does not declare {capability}")


def test_shared_holds_coexist_and_a_writer_waits_for_them(url: str) -> None:
    skip_unless(url, "shared_locks")
    name = f"rw-{uuid.uuid4().hex}"

    async def main() -> None:
        async with await conch.aio.connect(url) as ours, await conch.aio.connect(url) as theirs:
            first, second = ours.lock(name, shared=True), theirs.lock(name, shared=True)
            assert await first.acquire(blocking=False)
            assert await second.acquire(blocking=False)
            writer = theirs.lock(name)
            assert await writer.acquire(blocking=False) is False
            waiting = asyncio.ensure_future(writer.acquire(blocking=10))
            await asyncio.sleep(0.3)
            late = ours.lock(name, shared=True)
            assert await late.acquire(blocking=False) is False, "a reader overtook the writer"
            await first.release()
            await second.release()
            assert await waiting
            assert writer.token is not None and writer.token > (second.token or 0)
            await writer.release()

    asyncio.run(main())


def test_at_most_limit_permits_and_a_release_lets_a_waiter_in(url: str) -> None:
    skip_unless(url, "semaphores")
    name = f"sem-{uuid.uuid4().hex}"

    async def main() -> None:
        async with await conch.aio.connect(url) as ours, await conch.aio.connect(url) as theirs:
            permits = [ours.semaphore(name, 2), theirs.semaphore(name, 2)]
            for permit in permits:
                assert await permit.acquire(blocking=False)
            third = theirs.semaphore(name, 2)
            assert await third.acquire(blocking=False) is False
            waiting = asyncio.ensure_future(third.acquire(blocking=10))
            await asyncio.sleep(0.2)
            await permits[0].release()
            assert await waiting
            with pytest.raises(conch.LimitMismatch):
                await ours.semaphore(name, 5).acquire(blocking=False)
            await permits[1].release()
            await third.release()

    asyncio.run(main())


def test_without_the_capability_it_is_not_supported(url: str) -> None:
    declared = conch.Coordinator(url).capabilities

    async def main() -> None:
        async with await conch.aio.connect(url) as coordinator:
            if not declared.shared_locks:
                with pytest.raises(conch.NotSupported, match="shared_locks"):
                    coordinator.lock("x", shared=True)
            if not declared.semaphores:
                with pytest.raises(conch.NotSupported, match="semaphores"):
                    coordinator.semaphore("x", 2)
            with pytest.raises(ValueError, match="limit"):
                coordinator.semaphore("x", 0)

    asyncio.run(main())
