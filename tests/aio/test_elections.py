"""Elections through conch.aio on every backend: one leader at a time with increasing tokens,
a waiting candidate woken by the resignation, the async context managers, watchers called
on the event loop."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import conch
import conch.aio
from tests.contract.waiting import handoff_bound


def test_one_leader_and_a_waiting_candidate_takes_over(url: str) -> None:
    name = f"election-{uuid.uuid4().hex}"

    async def main() -> None:
        async with await conch.aio.connect(url) as ours, await conch.aio.connect(url) as theirs:
            first, second = ours.election(name), theirs.election(name)
            assert await first.leader() is None
            assert await first.campaign(blocking=False)
            assert first.is_leader and first.token is not None
            assert await second.campaign(blocking=False) is False
            assert await second.leader() == ours.member_id
            waiting = asyncio.ensure_future(second.campaign())
            await asyncio.sleep(0.2)
            assert not waiting.done()
            term = first.token
            await first.resign()
            assert await asyncio.wait_for(waiting, handoff_bound(theirs.capabilities) + 2)
            assert second.token is not None and second.token > term
            assert await first.leader() == theirs.member_id
            await second.resign()

    asyncio.run(main())


def test_async_with_campaigns_resigns_and_refuses_when_not_won(url: str) -> None:
    name = f"election-{uuid.uuid4().hex}"

    async def main() -> None:
        async with await conch.aio.connect(url) as ours, await conch.aio.connect(url) as theirs:
            async with ours.election(name) as leading:
                assert leading.is_leader
                with pytest.raises(conch.LockAcquireFailed, match="not won at once"):
                    async with theirs.election(name)(blocking=False):
                        pass
            assert not leading.is_leader
            async with theirs.election(name)(blocking=2) as other:
                assert other.is_leader

    asyncio.run(main())


def test_watchers_are_called_on_the_event_loop(url: str) -> None:
    name = f"election-{uuid.uuid4().hex}"

    async def main() -> None:
        async with await conch.aio.connect(url) as ours, await conch.aio.connect(url) as theirs:
            changes: asyncio.Queue[conch.LeaderChange] = asyncio.Queue()
            loop = asyncio.get_running_loop()

            def told(change: conch.LeaderChange) -> None:
                assert asyncio.get_running_loop() is loop
                changes.put_nowait(change)

            theirs.election(name, watch_interval=0.2).watch(told)
            election = ours.election(name)
            await election.campaign()
            change = await asyncio.wait_for(changes.get(), 5)
            assert (change.leader, change.previous) == (ours.member_id, None)
            await election.resign()
            change = await asyncio.wait_for(changes.get(), 5)
            assert change.leader is None

    asyncio.run(main())
