"""The async API's forms: connect, ``async with``, acquire/release, errors, tokens."""

from __future__ import annotations

import asyncio
import time

import pytest

import conch
import conch.aio


def test_connect_returns_a_started_coordinator_and_async_with_stops_it(
    local_url: str, lock_name: str
) -> None:
    async def main() -> conch.aio.AsyncCoordinator:
        coordinator = await conch.aio.connect(local_url)
        assert coordinator.is_started and "started" in repr(coordinator)
        async with coordinator, coordinator.lock(lock_name) as lock:
            assert lock.held
        return coordinator

    coordinator = asyncio.run(main())
    assert not coordinator.is_started
    with pytest.raises(conch.NotStarted):
        coordinator.lock(lock_name)


def test_lock_before_start_raises_not_started(local_url: str, lock_name: str) -> None:
    with pytest.raises(conch.NotStarted, match="start"):
        conch.aio.AsyncCoordinator(local_url).lock(lock_name)


def test_bad_url_name_or_capability_fail_before_any_io(local_url: str) -> None:
    with pytest.raises(conch.InvalidURL):
        conch.aio.AsyncCoordinator(f"{local_url}?no_such_option=1")
    with pytest.raises(conch.NotSupported, match="distributed"):
        conch.aio.AsyncCoordinator(local_url, require={"distributed"})

    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            with pytest.raises(conch.InvalidLockName):
                coordinator.lock("")

    asyncio.run(main())


def test_acquire_release_token_and_held_follow_the_sync_contract(url: str, lock_name: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(url) as mine, await conch.aio.connect(url) as theirs:
            lock, contender = mine.lock(lock_name), theirs.lock(lock_name)
            assert lock.token is None and not lock.held
            assert await lock.acquire() is True
            assert lock.held and not lock.lost.is_set()
            if mine.capabilities.fencing:
                assert isinstance(lock.token, int)
            assert await contender.acquire(blocking=False) is False
            assert contender.token is None
            with pytest.raises(conch.LockNotHeld):
                await contender.release()
            first = lock.token
            await lock.release()
            assert not lock.held and lock.token is None
            with pytest.raises(conch.LockNotHeld):
                await lock.release()
            assert await contender.acquire(blocking=5) is True
            if mine.capabilities.fencing:
                assert contender.token is not None and first is not None
                assert contender.token > first
            await contender.release()

    asyncio.run(main())


@pytest.mark.parametrize("blocking", [True, 5.0], ids=["True", "5.0"])
def test_async_with_lock_holds_inside_and_releases_on_exit(
    local_url: str, lock_name: str, blocking: bool | float
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            lock, other = coordinator.lock(lock_name), coordinator.lock(lock_name)
            async with lock(blocking=blocking) as entered:
                assert entered is lock and lock.held
                assert await other.acquire(blocking=False) is False
            assert not lock.held
            async with lock:
                assert lock.held
            assert await other.acquire(blocking=False) is True
            await other.release()

    asyncio.run(main())


@pytest.mark.parametrize("blocking", [False, 0, 0.3], ids=["False", "0", "0.3"])
def test_async_with_raises_lock_acquire_failed_when_held_elsewhere(
    local_url: str, lock_name: str, blocking: bool | float
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            assert await coordinator.lock(lock_name).acquire()
            contender = coordinator.lock(lock_name)
            started = time.monotonic()
            with pytest.raises(conch.LockAcquireFailed, match=lock_name):
                async with contender(blocking=blocking):
                    pytest.fail("the body ran without the lock")
            assert time.monotonic() - started >= (0 if blocking is False else blocking) * 0.9
            assert not contender.held

    asyncio.run(main())


def test_exception_in_the_body_releases_the_lock(local_url: str, lock_name: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            lock = coordinator.lock(lock_name)
            with pytest.raises(KeyError):
                async with lock:
                    raise KeyError("body failed")
            assert not lock.held
            assert await coordinator.lock(lock_name).acquire(blocking=False)

    asyncio.run(main())


@pytest.mark.parametrize("blocking", [-1, float("nan"), "1", None],
                         ids=["-1", "nan", "str", "None"])
def test_a_bad_blocking_value_is_rejected_before_waiting(
    local_url: str, lock_name: str, blocking: object
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            lock = coordinator.lock(lock_name)
            with pytest.raises((ValueError, TypeError), match="blocking"):
                await lock.acquire(blocking)  # type: ignore[arg-type]
            with pytest.raises((ValueError, TypeError), match="blocking"):
                lock(blocking)  # type: ignore[arg-type]
            assert await coordinator.lock(lock_name).acquire(blocking=False)

    asyncio.run(main())


def test_the_same_object_waits_for_its_own_release(local_url: str, lock_name: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(local_url) as coordinator:
            lock = coordinator.lock(lock_name)
            assert await lock.acquire()
            token = lock.token
            assert await lock.acquire(blocking=False) is False
            assert await lock.acquire(blocking=0.2) is False
            assert lock.held and lock.token == token
            second = asyncio.ensure_future(lock.acquire())
            await asyncio.sleep(0.1)
            assert not second.done(), "acquire on an object that holds its lock did not wait"
            await lock.release()
            assert await asyncio.wait_for(second, 5) is True
            assert lock.held
            await lock.release()

    asyncio.run(main())


def test_a_shared_async_coordinator_excludes_the_sync_locks_of_its_coordinator(
    local_url: str, lock_name: str
) -> None:
    with conch.connect(local_url) as sync:
        shared = conch.aio.AsyncCoordinator.sharing(sync)
        assert conch.aio.AsyncCoordinator.sharing(sync) is shared
        assert shared.member_id == sync.member_id

        async def main() -> None:
            async with shared.lock(lock_name):
                assert sync.lock(lock_name).acquire(blocking=False) is False

        with sync.lock(lock_name), pytest.raises(conch.LockAcquireFailed):
            asyncio.run(_enter(shared.lock(lock_name), blocking=False))
        asyncio.run(main())


async def _enter(lock: conch.aio.AsyncLock, blocking: bool | float) -> None:
    async with lock(blocking):
        pass


def test_a_shared_coordinator_restarted_directly_serves_its_async_side_again(
    local_url: str, lock_name: str
) -> None:
    sync = conch.Coordinator(local_url).start()
    shared = conch.aio.AsyncCoordinator.sharing(sync)

    async def cycle() -> None:
        lock = shared.lock(lock_name)
        assert await lock.acquire(blocking=5)
        await lock.release()

    async def main() -> None:
        await cycle()  # leaves an idle queue behind, with its lock objects
        sync.stop()
        sync.start()
        await cycle()

    try:
        asyncio.run(main())
    finally:
        sync.stop()
