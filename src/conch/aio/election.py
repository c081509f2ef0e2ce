"""Leader election for asyncio: :class:`AsyncElection`, from ``coordinator.election(name)``.

As :class:`conch.Election`: leading is holding the election's lock (an
:class:`~conch.aio.AsyncLock`), so the async lock's contract applies; watchers are called
on the event loop that asked to watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from conch.aio.lock import AsyncLock
from conch.election import Candidate, LeaderChange, leader_of, not_won
from conch.group_watch import Subscription
from conch.introspection import LockInfo
from conch.lock import Blocking, wait_budget


class AsyncElection(Candidate[asyncio.Event]):
    """One candidate of an election, for asyncio (one term at a time per object)."""

    _lock: AsyncLock

    def __init__(self, name: str | bytes, lock: AsyncLock,
                 describe: Callable[[], Awaitable[LockInfo]],
                 describe_now: Callable[[], LockInfo], watch_interval: float) -> None:
        super().__init__(name, lock, describe_now, watch_interval)
        self._describe = describe

    def __repr__(self) -> str:
        leading = "leading" if self.is_leader else "not leading"
        return f"<conch.aio.AsyncElection {self.name!r} {leading}>"

    async def campaign(self, blocking: Blocking = True) -> bool:
        """Become the leader, waiting as ``blocking`` says; whether it did."""
        won = await self._lock.acquire(blocking)
        if won:
            self._poke()
        return won

    async def resign(self) -> None:
        """End this term (:class:`conch.LockNotHeld`, :class:`conch.LockLost` as a lock)."""
        try:
            await self._lock.release()
        finally:
            self._poke()

    async def leader(self) -> str | None:
        """The member id of the current leader as the server sees it (``None``: nobody)."""
        return leader_of(await self._describe())

    def watch(self, watcher: Callable[[LeaderChange], object]) -> Subscription:
        """Call ``watcher`` on the running event loop with each new term from now on."""
        loop = asyncio.get_running_loop()
        return self._add_watcher(lambda change: loop.call_soon_threadsafe(watcher, change))

    def __call__(self, blocking: Blocking = True) -> _AsyncTerm:
        """``async with election(blocking):`` campaign (else :class:`conch.LockAcquireFailed`),
        resign on exit."""
        wait_budget(blocking)
        return _AsyncTerm(self, blocking)

    async def __aenter__(self) -> AsyncElection:
        return await _AsyncTerm(self, True).__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.resign()


class _AsyncTerm:
    def __init__(self, election: AsyncElection, blocking: Blocking) -> None:
        self._election, self._blocking = election, blocking

    async def __aenter__(self) -> AsyncElection:
        if not await self._election.campaign(self._blocking):
            raise not_won(self._election.name, self._blocking)
        return self._election

    async def __aexit__(self, *exc_info: object) -> None:
        await self._election.resign()
