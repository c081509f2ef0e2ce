"""The ``postgresql://`` lock handles (a session of their own per hold) and the session pools
they draw from, blocking and asyncio, around one core."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic

import psycopg

from conch import metrics
from conch.backends.base import AsyncLockHandle, Deadline, LockHandle, LossCallback
from conch.backends.kit.pool import Pool
from conch.backends.kit.session import Holds
from conch.backends.kit.socket_wait import SocketWait
from conch.backends.postgresql import statements
from conch.backends.postgresql.session import AsyncSession, S, Session, forget_connection
from conch.errors import BackendUnavailable, LockLost, NotStarted


class Hold(Generic[S]):
    """One acquisition: the key, the session holding it, and whether it still does."""

    def __init__(self, key: int, session: S, pool: Pool[S], loop: Any, space: int = 1) -> None:
        self.key, self.session, self.pool, self.loop = key, session, pool, loop
        self.space = space  # of the key: see statements.holds
        self.active = True  # not released, lost or abandoned
        self.guard = threading.Lock()  # a release and a check take turns
        self.checking: Any = None  # an async hold's check in progress

    def checked(self, holds: Holds[Hold[S]], listed: object) -> None:
        """A check's outcome: lost if the server no longer lists it or its connection failed."""
        if listed is True:
            return metrics.record_renewals("postgresql", 1)
        if listed is False:
            reason = "the server no longer lists it as held by this session"
        elif isinstance(listed, psycopg.Error) and self.session.closed:
            reason = f"its connection failed: {listed}"
        else:
            return None  # no verdict; the next beat asks again
        with self.guard:
            active, self.active = self.active, False
        if active:
            self.pool.give_back(self.session, keep=False)
            holds.lose(self, reason)
            metrics.record_renewals("postgresql", 0, 1)


class SessionsCore(Generic[S]):
    """A coordinator's sessions of one kind (a pool) and the holds they keep."""

    def __init__(self, describe: Callable[[object], str], conninfo: str, io_timeout: float,
                 keep_idle: int) -> None:
        self.describe, self.conninfo, self.io_timeout = describe, conninfo, io_timeout
        self.named_keys: set[int] = set()  # keys whose name this process recorded
        # An idle session that is readable was sent an error or EOF: it is gone.
        self.pool: Pool[S] = Pool(
            lambda session: session.pgconn.finish(), forget_connection, keep_idle,
            lambda: NotStarted(describe("the coordinator was stopped")),
            lambda session, _: not session.closed and not SocketWait(session.pgconn.socket).ready())
        self.holds: Holds[Hold[S]] = Holds()


class HandleCore(Generic[S]):
    """A lock name, its key and its hold, and what each outcome means."""

    def __init__(self, sessions: SessionsCore[S], key: int, name: bytes,
                 on_lost: LossCallback) -> None:
        self._sessions, self._key, self._name, self._on_lost = sessions, key, name, on_lost
        self._describe, self._holds, self._pool = sessions.describe, sessions.holds, sessions.pool
        self._hold: Hold[S] | None = None

    def name_to_record(self) -> bytes | None:
        """The name, with this process's first hold of the key (else ``None``)."""
        return None if self._key in self._sessions.named_keys else self._name

    def failed(self, session: S, result: object, retry: bool) -> bool:
        """Whether an acquire's ``result`` is a failure to try again (its connection was gone:
        a server restart); raises any other, closing the session (it may hold the lock)."""
        if not isinstance(result, BaseException):
            return False
        broken = session.closed
        self._pool.give_back(session, keep=False)
        if not isinstance(result, psycopg.Error):
            raise result
        if self._pool.closed:  # its wait was cancelled, or its session closed, by stop()
            raise self._pool.stopped() from None
        if not (retry and broken):
            raise BackendUnavailable(self._describe(result)) from None
        return True

    def taken(self, session: S, token: Any, loop: Any = None) -> int | None:
        """The acquire's answer on ``session``: the hold's token, or ``None`` (not taken)."""
        if token is None:
            self._pool.give_back(session)
            return None
        if len(self._sessions.named_keys) >= 100_000:  # a name recorded twice: a skipped insert
            self._sessions.named_keys.clear()
        self._sessions.named_keys.add(self._key)
        hold = self._hold = self.new_hold(session, loop)
        self._holds.add(hold, self._on_lost)
        if self._pool.closed:  # stopped while we waited
            self.releasing()
            self._pool.give_back(session, keep=False)
            raise self._pool.stopped()
        return int(token)

    def new_hold(self, session: S, loop: Any) -> Hold[S]:
        """The hold of an acquire that took the lock on ``session``."""
        return Hold(self._key, session, self._pool, loop)

    def releasing(self) -> Hold[S] | None:
        """The hold to release (``None``: none); raises LockLost when it was lost."""
        hold, self._hold = self._hold, None
        if hold is not None:
            self._holds.discard(hold)
            with hold.guard:
                active, hold.active = hold.active, False
            if not active:  # its session was closed; the report may be on its way
                self.released(hold, False)
        return hold

    def released(self, hold: Hold[S], unlocked: object) -> None:
        """The unlock's outcome: the session given back, or LockLost (not held, or it failed)."""
        hold.pool.give_back(hold.session, keep=unlocked is True)
        if unlocked is True:
            return
        if isinstance(unlocked, BaseException) and not isinstance(unlocked, psycopg.Error):
            raise unlocked
        raise LockLost(self._describe(
            "the server no longer held the lock for this session" if unlocked is False else
            f"the session holding the lock failed before release ({unlocked}); "
            "the server freed the lock, another holder may have taken it")) from None


class Sessions(SessionsCore[Session]):
    """The coordinator's blocking sessions (a pool) and the holds they keep."""

    def open(self) -> Session:
        """A new session (raises BackendUnavailable); statements are prepared on first use."""
        try:
            session = Session.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise BackendUnavailable(self.describe(f"cannot connect: {exc}")) from None
        session.io_timeout = session.limit = self.io_timeout
        session.prepared = {}
        return session

    def borrow(self) -> Session:
        """An idle live session, or a new one; NotStarted once closed."""
        return self.pool.idle_one() or self.pool.lend(self.open())

    def check_holds(self) -> None:
        """Ask the server whether each hold lives (the heartbeat thread)."""
        for hold in self.holds.snapshot():
            with hold.guard:
                if not hold.active:
                    continue  # released meanwhile: its session may serve another hold now
                listed = hold.session.outcome(statements.holds(hold.key, hold.space))
            hold.checked(self.holds, listed)

    def close(self) -> None:
        """Cancel the lock waits in progress on the server, then close every session."""
        for session in self.pool.close():
            if session.waiting_for_lock:
                with contextlib.suppress(psycopg.Error):  # best effort: closing ends it too
                    session.cancel_safe(timeout=self.io_timeout)
            session.end()
        self.holds.lose_all("the coordinator was stopped")


class AdvisoryLock(HandleCore[Session], LockHandle):
    """The blocking handle of one lock name (``shared``: its shared holds)."""

    _sessions: Sessions
    shared = False

    def acquire(self, deadline: Deadline) -> int | None:
        for retry in (True, False):
            session = self._sessions.borrow()
            steps = statements.take(self._key, deadline, self.name_to_record(), self.shared)
            if not self.failed(session, token := session.outcome(steps), retry):
                break
        return self.taken(session, token)

    def release(self) -> None:
        if (hold := self.releasing()) is not None:
            self.released(hold, hold.session.outcome(statements.unlock(self._key, self.shared)))


class SharedAdvisoryLock(AdvisoryLock):
    """A shared hold of a lock name: the same key in share mode."""

    shared = True


class AsyncSessions(SessionsCore[AsyncSession]):
    """The coordinator's asyncio sessions (one pool for every event loop) and their holds."""

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
    """The asyncio handle of one lock name; a cancelled acquire leaves nothing held."""

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
