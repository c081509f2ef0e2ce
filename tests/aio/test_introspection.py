"""describe / holders / break_lock through conch.aio, on every backend.

What each backend shows is tested by tests/test_introspection.py through the sync
API, which these methods run on conch's threads: here, that they answer the same,
that their errors come before any thread hop, and that breaking an async holder
sets its ``lost`` Event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

import conch
import conch.aio
from conch.introspection import HolderChanged
from tests.test_introspection import KNOWS_WAITERS, LEARNS_WITHIN


def _raises_at_once(call: Coroutine[Any, Any, Any], error: type[Exception]) -> None:
    """``call`` raises ``error`` at its first step, before it could await a thread."""
    with pytest.raises(error):
        call.send(None)
    call.close()


def test_errors_come_before_any_thread_hop(url: str) -> None:
    coordinator = conch.aio.AsyncCoordinator(url)
    # Outside any event loop: a call that reached the pool would fail with RuntimeError.
    for call in (coordinator.describe("x"), coordinator.holders(), coordinator.break_lock("x")):
        _raises_at_once(call, conch.NotStarted)
    for bad in ("", 5):
        _raises_at_once(coordinator.describe(bad), conch.InvalidLockName)  # type: ignore[arg-type]
        _raises_at_once(coordinator.break_lock(bad), conch.InvalidLockName)  # type: ignore[arg-type]


def test_describe_and_holders_show_an_async_holder_and_its_waiter(
    url: str, backend: str, lock_name: str
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(url, member_id="holder-1") as holder, \
                await conch.aio.connect(url, member_id="observer") as observer:
            if not observer.capabilities.introspection:
                with pytest.raises(conch.NotSupported):
                    await observer.describe(lock_name)
                with pytest.raises(conch.NotSupported):
                    await observer.holders()
                return
            names = [f"{lock_name}/b", f"{lock_name}/a"]
            locks = [holder.lock(name) for name in names]
            for lock in locks:
                assert await lock.acquire()
            waiting = observer.lock(names[0])
            waiter = asyncio.ensure_future(waiting.acquire(30))
            try:
                info = await observer.describe(names[0])
                assert info.holder is not None and info.holder.member_id == "holder-1"
                assert info.holder.token in (locks[0].token, None)  # None: cannot tell
                listed = await observer.holders(lock_name)
                assert [found.name for found in listed] == sorted(names)
                if backend in KNOWS_WAITERS:
                    for _ in range(100):
                        if (await observer.describe(names[0])).waiters == 1:
                            break
                        await asyncio.sleep(0.1)
                    else:
                        pytest.fail("the async waiter was not counted")
            finally:
                for lock in locks:
                    await lock.release()
            assert await asyncio.wait_for(waiter, 30) is True
            info = await observer.describe(names[0])
            assert info.holder is not None and info.holder.member_id == "observer"
            assert [found.name for found in await observer.holders(lock_name)] == [names[0]]
            await waiting.release()
            assert await observer.holders(lock_name) == []

    asyncio.run(main())


def test_break_sets_the_async_holders_lost(url: str, lock_name: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(url, member_id="holder-1") as holder, \
                await conch.aio.connect(url) as observer:
            lock = holder.lock(lock_name)
            assert await lock.acquire()
            if not observer.capabilities.breakable:
                with pytest.raises(conch.NotSupported):
                    await observer.break_lock(lock_name)
                await lock.release()
                return
            token = (await observer.describe(lock_name)).holder.token  # type: ignore[union-attr]
            if token is not None:
                with pytest.raises(HolderChanged):
                    await observer.break_lock(lock_name, token=token - 1)
                assert lock.held and not lock.lost.is_set()
            broken = await observer.break_lock(lock_name, token=token)
            assert broken.holder is not None and broken.holder.member_id == "holder-1"
            successor = observer.lock(lock_name)
            assert await successor.acquire(LEARNS_WITHIN)
            await asyncio.wait_for(lock.lost.wait(), LEARNS_WITHIN)
            assert not lock.held
            with pytest.raises(conch.LockLost):
                await lock.release()
            await successor.release()
            assert (await observer.break_lock(lock_name)).holder is None  # free: nothing done

    asyncio.run(main())
