"""A lost hold: ``lock.lost`` (an asyncio.Event), LockLost, and the opt-in cancellation."""

from __future__ import annotations

import asyncio
import sys

import pytest

import conch
import conch.aio
from conch.backends.redis.steps import lock_keys
from tests.servers.redis import RedisProcess

LOSS_NOTICED = 5.0
"""Seconds within which a redis:// holder with ``ttl=1.5`` notices its key is gone."""


def test_stop_sets_lost_and_release_then_raises_lock_lost(url: str, lock_name: str) -> None:
    async def main() -> None:
        coordinator = await conch.aio.connect(url)
        lock = coordinator.lock(lock_name)
        assert await lock.acquire()
        noticed = asyncio.ensure_future(lock.lost.wait())
        await coordinator.stop()
        await asyncio.wait_for(noticed, 5)
        assert not lock.held and lock.token is None
        with pytest.raises(conch.LockLost):
            await lock.release()
        with pytest.raises(conch.LockNotHeld):
            await lock.release()
        await _assert_free(url, lock_name)

    asyncio.run(main())


def test_stop_ends_pending_acquires_with_not_started(local_url: str, lock_name: str) -> None:
    async def main() -> None:
        coordinator = await conch.aio.connect(local_url)
        assert await coordinator.lock(lock_name).acquire()
        waiters = [asyncio.ensure_future(coordinator.lock(lock_name).acquire(blocking))
                   for blocking in (True, 30.0)]
        await asyncio.sleep(0.1)
        await coordinator.stop()
        for waiter in waiters:
            with pytest.raises(conch.NotStarted):
                await asyncio.wait_for(waiter, 5)
        await _assert_free(local_url, lock_name)

    asyncio.run(main())


def test_a_hold_lost_on_the_server_sets_lost_and_lets_the_next_waiter_in(
    redis_server: RedisProcess, lock_name: str
) -> None:
    url = f"{redis_server.url}/0?ttl=1.5"

    async def main() -> None:
        async with await conch.aio.connect(url) as coordinator:
            holder = coordinator.lock(lock_name)
            assert await holder.acquire()
            lost_token = holder.token
            waiter_lock = coordinator.lock(lock_name)
            waiter = asyncio.ensure_future(waiter_lock.acquire())
            with redis_server.admin() as admin:
                admin.delete(lock_keys(lock_name.encode()).holder)
            await asyncio.wait_for(holder.lost.wait(), LOSS_NOTICED)
            assert not holder.held
            # Like another lock object after a loss: no need to wait for the lost holder.
            assert await asyncio.wait_for(waiter, 10) is True
            assert waiter_lock.token is not None and lost_token is not None
            assert waiter_lock.token > lost_token
            with pytest.raises(conch.LockLost):
                await holder.release()
            assert waiter_lock.held and not waiter_lock.lost.is_set()
            await waiter_lock.release()

    asyncio.run(main())


def test_cancel_on_loss_cancels_the_body_and_leaving_raises_lock_lost(
    redis_server: RedisProcess, lock_name: str
) -> None:
    url = f"{redis_server.url}/0?ttl=1.5"
    reached: list[str] = []

    async def work(lock: conch.aio.AsyncLock) -> None:
        async with lock(cancel_on_loss=True):
            reached.append("inside")
            await asyncio.sleep(30)
            reached.append("finished")  # never: the loss cancels the sleep

    async def main() -> None:
        async with await conch.aio.connect(url) as coordinator:
            task = asyncio.ensure_future(work(coordinator.lock(lock_name)))
            await asyncio.sleep(0.2)
            with redis_server.admin() as admin:
                admin.delete(lock_keys(lock_name.encode()).holder)
            with pytest.raises(conch.LockLost):
                await asyncio.wait_for(task, LOSS_NOTICED)
            if sys.version_info >= (3, 11):
                assert task.cancelling() == 0, "the loss left a cancellation request behind"

    asyncio.run(main())
    assert reached == ["inside"]


@pytest.mark.parametrize("cancel_on_loss", [True, False])
def test_a_stop_inside_the_block_raises_lock_lost_on_leaving(
    local_url: str, lock_name: str, cancel_on_loss: bool
) -> None:
    reached: list[str] = []

    async def main() -> None:
        coordinator = await conch.aio.connect(local_url)

        async def work() -> None:
            async with coordinator.lock(lock_name)(cancel_on_loss=cancel_on_loss) as lock:
                reached.append("inside")
                await asyncio.sleep(0.5)
                reached.append("finished")
                assert lock.lost.is_set()

        task = asyncio.ensure_future(work())
        await asyncio.sleep(0.1)
        await coordinator.stop()
        with pytest.raises(conch.LockLost):
            await task

    asyncio.run(main())
    assert reached == (["inside"] if cancel_on_loss else ["inside", "finished"])


def test_cancel_on_loss_leaves_other_cancellations_alone(local_url: str, lock_name: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            lock = coordinator.lock(lock_name)

            async def work() -> None:
                async with lock(cancel_on_loss=True):
                    await asyncio.sleep(30)

            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(work(), 0.2)
            assert not lock.held and not lock.lost.is_set()
            assert await coordinator.lock(lock_name).acquire(blocking=False)

    asyncio.run(main())


async def _assert_free(url: str, name: str) -> None:
    async with await conch.aio.connect(url) as probe:
        lock = probe.lock(name)
        assert await lock.acquire(blocking=10), "the lock was not freed"
        await lock.release()
