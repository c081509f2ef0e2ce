"""Native asyncio for ``postgresql://``: the same holds as the blocking side (a session of
their own, the same statements), waited for on the event loop; checked on their loop when
the backend's heartbeat thread asks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from conch.backends.base import AsyncLockHandle, Deadline, LossCallback
from conch.backends.kit.session import Holds
from conch.backends.postgresql import statements
from conch.backends.postgresql.async_session import AsyncSession, LoopPools, run
from conch.backends.postgresql.hold import (
    HandleCore,
    Hold,
    Owner,
    cannot_connect,
    checked,
    stopped,
)
from conch.backends.postgresql.session import Pool
from conch.backends.postgresql.statements import Steps


class AsyncSessions:
    """The coordinator's asyncio sessions (a pool per event loop) and the holds they keep."""

    def __init__(self, owner: Owner, conninfo: str, io_timeout: float, keep_idle: int) -> None:
        self.owner = owner
        self._conninfo = conninfo
        self._io_timeout = io_timeout
        self.pools = LoopPools(keep_idle, lambda: stopped(owner))
        self.holds: Holds[Hold[AsyncSession]] = Holds()

    async def borrow(self, pool: Pool[AsyncSession]) -> AsyncSession:
        """An idle live session of ``pool``, or a new one."""
        session = pool.idle_one()
        if session is not None:
            return session
        try:
            return pool.lend(await AsyncSession.open(self._conninfo, self._io_timeout))
        except psycopg.Error as exc:
            raise cannot_connect(self.owner, exc) from None

    def check_holds(self) -> None:
        """Schedule a check of every hold on its loop (from the heartbeat thread)."""
        for hold in self.holds.snapshot():
            with contextlib.suppress(RuntimeError):  # a closed loop: stop() frees the hold
                hold.loop.call_soon_threadsafe(self._start_check, hold)

    def close(self) -> None:
        """The coordinator stops (any thread): close idle sessions, cancel lock waits."""
        self.pools.close()
        self.holds.lose_all("the coordinator was stopped")

    def _start_check(self, hold: Hold[AsyncSession]) -> None:
        if hold.active and hold.checking is None:
            hold.checking = hold.loop.create_task(self._check(hold))

    async def _check(self, hold: Hold[AsyncSession]) -> None:
        try:
            listed = await answer(hold.session, statements.holds(hold.key))
        finally:
            hold.checking = None
        checked(self.holds, hold, listed)


class AsyncAdvisoryLock(HandleCore[AsyncSession], AsyncLockHandle):
    """The asyncio handle of one lock name. A cancelled acquire leaves nothing held: its
    lock wait is cancelled on the server and its session closed."""

    def __init__(self, sessions: AsyncSessions, key: int, name: bytes,
                 on_lost: LossCallback) -> None:
        super().__init__(sessions.owner, sessions.holds, key, name, on_lost)
        self._sessions = sessions

    async def acquire(self, deadline: Deadline) -> int | None:
        retry = True
        while True:
            pool = self._sessions.pools.running()
            session = await self._sessions.borrow(pool)
            steps = statements.take(session, self._key, deadline, self.name_to_record())
            try:
                token = await run(session, steps)
            except BaseException as exc:
                self.failed(pool, session, exc, retry)
                retry = False
                continue
            return self.taken(pool, session, token, asyncio.get_running_loop())

    async def release(self) -> None:
        hold = self.releasing()
        if hold is None:
            return
        if hold.checking is not None:  # one statement at a time
            await asyncio.wait([hold.checking])
        unlocked = await answer(hold.session, statements.unlock(self._key))
        self.released(hold.pool, hold.session, unlocked)

    def abandon(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._holds.discard(hold)
            hold.active = False
            hold.session.shutdown()  # the server ends the session and frees the lock


async def answer(session: AsyncSession, steps: Steps[Any]) -> object:
    """What ``steps`` return, or what they raised."""
    try:
        return await run(session, steps)
    except BaseException as exc:
        return exc
