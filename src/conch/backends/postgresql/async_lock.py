"""Native asyncio ``postgresql://`` handles: the blocking side's holds and statements."""

from __future__ import annotations

import asyncio

from conch.backends.base import AsyncLockHandle, Deadline
from conch.backends.postgresql import statements
from conch.backends.postgresql.async_session import AsyncSession, AsyncSessions, outcome
from conch.backends.postgresql.lock import HandleCore


class AsyncAdvisoryLock(HandleCore[AsyncSession], AsyncLockHandle):
    """The asyncio handle of one lock name. A cancelled acquire leaves nothing held: its
    lock wait is cancelled on the server and its session closed."""

    _sessions: AsyncSessions

    async def acquire(self, deadline: Deadline) -> int | None:
        for retry in (True, False):
            session = await self._sessions.borrow()
            steps = statements.take(self._key, deadline, self.name_to_record())
            if not self.failed(session, token := await outcome(session, steps), retry):
                break
        return self.taken(session, token, asyncio.get_running_loop())

    async def release(self) -> None:
        if (hold := self.releasing()) is None:
            return
        if hold.checking is not None:  # one statement at a time
            await asyncio.wait([hold.checking])
        self.released(hold, await outcome(hold.session, statements.unlock(self._key)))

    def abandon(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._holds.discard(hold)
            hold.active = False
            hold.session.shutdown()  # the server ends the session and frees the lock
