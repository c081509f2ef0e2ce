"""The asyncio side of ``postgresql://``: server sessions (psycopg's ``AsyncConnection``, bounded
as in session.py), pooled, and the lock handle on them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from conch.backends.base import AsyncLockHandle, Deadline
from conch.backends.postgresql import statements
from conch.backends.postgresql.lock import HandleCore, Hold, SessionsCore
from conch.backends.postgresql.session import Bounded
from conch.backends.postgresql.statements import Steps, advance
from conch.errors import BackendUnavailable


class AsyncSession(Bounded, psycopg.AsyncConnection[tuple[Any, ...]]):
    """One server session used by one task at a time on one loop; :meth:`cancel` and
    :meth:`shutdown` may come from any thread."""

    async def outcome(self, steps: Steps[Any]) -> Any:
        """What ``steps`` return, or the exception they (or a statement) raised (a cancelled
        task cancels its statement first)."""
        statement, result = advance(steps, None)
        while statement is not None:
            self.limit = statement.limit(self.io_timeout)
            try:
                async with self.lock:
                    answer = await self.wait(self.exchange(statement))
            except BaseException as exc:
                answer = exc
            self.limit = self.io_timeout
            statement, result = advance(steps, answer)
        return result

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return await super().wait(gen, interval, self.limit if timeout is None else timeout)
        except psycopg.OperationalError as exc:
            self.out_of_step(exc)
            raise


class AsyncSessions(SessionsCore[AsyncSession]):
    """The coordinator's asyncio sessions and the holds they keep. One pool serves every
    event loop: psycopg puts a socket on the running loop only while it waits for it."""

    async def borrow(self) -> AsyncSession:
        """An idle live session, or a new one; statements are prepared on first use."""
        if (session := self.pool.idle_one()) is not None:
            return session
        try:
            session = await AsyncSession.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise BackendUnavailable(self.describe(f"cannot connect: {exc}")) from None
        session.io_timeout = session.limit = self.io_timeout
        session.prepared = {}
        return self.pool.lend(session)

    def check_holds(self) -> None:
        """Schedule a check of every hold on its loop (from the heartbeat thread)."""
        for hold in self.holds.snapshot():
            with contextlib.suppress(RuntimeError):  # a closed loop: stop() frees the hold
                hold.loop.call_soon_threadsafe(self._start_check, hold)

    def _start_check(self, hold: Hold[AsyncSession]) -> None:
        if hold.active and hold.checking is None:
            hold.checking = hold.loop.create_task(self._check(hold))

    async def _check(self, hold: Hold[AsyncSession]) -> None:
        try:
            listed = await hold.session.outcome(statements.holds(hold.key))
        finally:
            hold.checking = None
        hold.checked(self.holds, listed)

    def close(self) -> None:
        """The coordinator stops (any thread): close idle sessions, cancel lock waits."""
        _cancel_waits(self.pool.close())
        self.holds.lose_all("the coordinator was stopped")

    async def close_running(self) -> None:
        """Close the sessions still lent out: a statement still in flight fails at once."""
        lent = self.pool.close()
        _cancel_waits(lent)  # again: a cancel sent before the wait began is lost
        for session in lent:
            if session.lock.locked():
                session.shutdown()  # its statement fails now; its task closes it
            else:
                session.pgconn.finish()


def _cancel_waits(sessions: list[AsyncSession]) -> None:
    for session in sessions:
        if session.waiting_for_lock:
            with contextlib.suppress(Exception):  # best effort
                session.cancel()


class AsyncAdvisoryLock(HandleCore[AsyncSession], AsyncLockHandle):
    """The asyncio handle of one lock name. A cancelled acquire leaves nothing held: its
    lock wait is cancelled on the server and its session closed."""

    _sessions: AsyncSessions

    async def acquire(self, deadline: Deadline) -> int | None:
        for retry in (True, False):
            session = await self._sessions.borrow()
            steps = statements.take(self._key, deadline, self.name_to_record())
            if not self.failed(session, token := await session.outcome(steps), retry):
                break
        return self.taken(session, token, asyncio.get_running_loop())

    async def release(self) -> None:
        if (hold := self.releasing()) is None:
            return
        if hold.checking is not None:  # one statement at a time
            await asyncio.wait([hold.checking])
        self.released(hold, await hold.session.outcome(statements.unlock(self._key)))

    def abandon(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._holds.discard(hold)
            hold.active = False
            hold.session.shutdown()  # the server ends the session and frees the lock
