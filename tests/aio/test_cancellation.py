"""A cancelled acquire leaves nothing held, whenever the cancellation comes."""

from __future__ import annotations

import asyncio
import random

import pytest

import conch
import conch.aio
from tests.aio.conftest import held_elsewhere


async def _assert_free(url: str, name: str) -> None:
    """Another member can take ``name`` (within a few seconds: a wait that was
    abandoned may still be giving back what it got)."""
    async with await conch.aio.connect(url) as probe:
        lock = probe.lock(name)
        assert await lock.acquire(blocking=10), "a cancelled acquire kept the lock"
        await lock.release()


def test_a_cancelled_waiter_leaves_nothing_held_once_the_holder_releases(
    url: str, lock_name: str
) -> None:
    async def main() -> None:
        async with held_elsewhere(url, lock_name) as (coordinator, holder):
            lock = coordinator.lock(lock_name)
            waiter = asyncio.ensure_future(lock.acquire())
            await asyncio.sleep(0.3)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert not lock.held
            await holder.release()  # the abandoned backend wait gets it: it must give it back
            await _assert_free(url, lock_name)
            with pytest.raises(conch.LockNotHeld):
                await lock.release()

    asyncio.run(main())


def test_a_cancelled_first_waiter_hands_its_backend_wait_to_the_next(
    local_url: str, lock_name: str
) -> None:
    async def main() -> None:
        async with held_elsewhere(local_url, lock_name) as (coordinator, holder):
            first = asyncio.ensure_future(coordinator.lock(lock_name).acquire())
            await asyncio.sleep(0.1)
            second_lock = coordinator.lock(lock_name)
            second = asyncio.ensure_future(second_lock.acquire())
            await asyncio.sleep(0.1)
            first.cancel()
            await asyncio.sleep(0.1)
            await holder.release()
            assert await asyncio.wait_for(second, 5) is True
            assert second_lock.held
            await second_lock.release()
        await _assert_free(local_url, lock_name)

    asyncio.run(main())


def test_cancelling_at_the_moment_the_lock_is_granted_leaves_nothing_held(
    local_url: str, lock_name: str
) -> None:
    """Cancel while the release that frees the lock is in flight, at varying instants:
    whether the grant or the cancellation wins, nothing stays held."""
    chance = random.Random(8)

    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator, \
                await conch.aio.connect(local_url) as other:
            for _ in range(30):
                holder = other.lock(lock_name)
                assert await holder.acquire(blocking=10)
                lock = coordinator.lock(lock_name)
                waiter = asyncio.ensure_future(lock.acquire())
                await asyncio.sleep(0.01)
                releasing = asyncio.ensure_future(holder.release())
                for _ in range(chance.randrange(6)):
                    await asyncio.sleep(0)
                waiter.cancel()
                await releasing
                try:
                    acquired = await waiter
                except asyncio.CancelledError:
                    assert not lock.held
                else:  # the grant came first: the cancellation was too late to count
                    assert acquired and lock.held
                    await lock.release()
            await _assert_free(local_url, lock_name)

    asyncio.run(main())


@pytest.mark.parametrize("where", ["first-try", "queued"])
def test_a_cancelled_acquire_of_a_free_lock_leaves_nothing_held(
    local_url: str, lock_name: str, where: str
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            if where == "queued":
                holder = coordinator.lock(lock_name)
                assert await holder.acquire()
            lock = coordinator.lock(lock_name)
            waiter = asyncio.ensure_future(lock.acquire(blocking=5))
            await asyncio.sleep(0)  # started: its first try is in flight (or it is queued)
            waiter.cancel()
            if where == "queued":
                await holder.release()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert not lock.held
        await _assert_free(local_url, lock_name)

    asyncio.run(main())


def test_timeout_around_acquire_cancels_it_cleanly(local_url: str, lock_name: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            holder = coordinator.lock(lock_name)
            assert await holder.acquire()
            lock = coordinator.lock(lock_name)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(lock.acquire(), 0.2)
            assert not lock.held
            await holder.release()
            assert await lock.acquire(blocking=5)
            await lock.release()

    asyncio.run(main())


def test_a_wait_left_behind_by_a_closed_event_loop_gives_back_what_it_gets(
    local_url: str, lock_name: str
) -> None:
    with conch.connect(local_url) as sync:
        holder = sync.lock(lock_name)
        assert holder.acquire()
        shared = conch.aio.AsyncCoordinator.sharing(sync)

        async def leave_a_waiter_behind() -> None:
            waiter = asyncio.ensure_future(shared.lock(lock_name).acquire())
            await asyncio.sleep(0.2)  # its backend wait has started; asyncio.run cancels it
            assert not waiter.done()

        asyncio.run(leave_a_waiter_behind())
        holder.release()  # the backend wait gets the lock now, with no loop to hand it to
        probe = sync.lock(lock_name)
        assert probe.acquire(blocking=10), "the abandoned wait kept the lock"
        probe.release()


def test_cancelling_the_last_waiter_ends_a_native_backend_wait_at_once(
    memory_url: str, lock_name: str
) -> None:
    async def waiters(coordinator: conch.aio.AsyncCoordinator) -> int | None:
        return (await coordinator.describe(lock_name)).waiters

    async def main() -> None:
        async with held_elsewhere(memory_url, lock_name) as (coordinator, holder):
            assert coordinator.capabilities.native_async
            waiter = asyncio.ensure_future(coordinator.lock(lock_name).acquire())
            while await waiters(coordinator) != 1:
                await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            for _ in range(100):
                if await waiters(coordinator) == 0:
                    break
                await asyncio.sleep(0.01)
            assert await waiters(coordinator) == 0, "the backend wait outlived its waiters"
            await holder.release()

    asyncio.run(main())
