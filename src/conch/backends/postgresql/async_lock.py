"""Native asyncio for ``postgresql://``: the same advisory locks, waited for on the loop.

An async hold is exactly a sync one (:mod:`conch.backends.postgresql.backend`): a session of
its own, the same prepared statements, lock and token in one round-trip, the wait in
the server (``pg_advisory_lock`` bounded by ``lock_timeout``), so sync and async
holders of a name exclude each other and draw from one token sequence.

Why not ``psycopg.AsyncConnection``: the sync backend already speaks to libpq through
``psycopg.pq`` with its own waits, and every statement is written once as sans-I/O
steps (:mod:`conch.backends.postgresql.protocol`). Driving those steps with the socket
on the loop (:mod:`conch.backends.postgresql.async_session`) shares all of the SQL,
the error handling and the lock logic with the sync session, and keeps the
uncontended path to one ``add_reader`` per round-trip: no adaptation layer, cursor,
transaction state or per-connection asyncio lock as an ``AsyncConnection`` would add.

Sessions are per event loop (a session-level lock belongs to its connection, and a
socket to one loop's selector): each loop has its own pool of idle sessions.
:meth:`AsyncSessions.close_async` closes the running loop's; :meth:`AsyncSessions.close`
(the coordinator stops) closes every idle one, cancels waits in flight, and leaves the
rest to their loops or to the garbage collector.

A cancelled acquire leaves nothing held: its connection is closed, after asking the
server to cancel a lock wait in progress (the server frees a closed session's locks).
A held session is checked like a sync one, every ``heartbeat`` seconds, on its loop
(the backend's heartbeat thread schedules the checks): a failed connection, no
answer within ``connect_timeout`` or a lock no longer listed reports the hold lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from typing import TYPE_CHECKING

from conch import metrics
from conch.backends.base import AsyncLockHandle, Deadline, LossCallback
from conch.backends.kit.session import Holds
from conch.backends.postgresql.async_session import AsyncSession
from conch.backends.postgresql.protocol import cannot_connect, lost_at_release, refused
from conch.backends.postgresql.wire import SessionBroken, StatementFailed
from conch.errors import NotStarted

if TYPE_CHECKING:
    from conch.backends.postgresql.backend import PostgreSQLBackend


class _LoopPool:
    """One event loop's sessions: idle ones, and those lent out (waiting or holding)."""

    __slots__ = ("__weakref__", "idle", "lent")

    def __init__(self) -> None:
        self.idle: list[AsyncSession] = []
        self.lent: set[AsyncSession] = set()


class AsyncSessions:
    """A backend's asyncio side: a pool of sessions per event loop, and the async holds."""

    def __init__(self, backend: PostgreSQLBackend, conninfo: bytes, keep_idle: int) -> None:
        self._backend = backend
        self._conninfo = conninfo
        self._keep_idle = keep_idle
        self._mutex = threading.Lock()  # close() comes from another thread
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = \
            weakref.WeakKeyDictionary()
        self.holds: Holds[_AsyncHold] = Holds()
        self.closed = False

    def handle(self, key: int, name: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        """A handle for the lock of advisory ``key`` (the name ``name``)."""
        return _AsyncAdvisoryLock(self._backend, self, key, name, on_lost)

    async def borrow(self) -> AsyncSession:
        """An idle live session of the running loop, or a new one."""
        loop = asyncio.get_running_loop()
        while True:
            with self._mutex:
                if self.closed:
                    raise self.stopped()
                pool = self._pools.get(loop)
                if pool is None:
                    pool = self._pools[loop] = _LoopPool()
                session = pool.idle.pop() if pool.idle else None
                if session is not None:
                    pool.lent.add(session)
            if session is None:
                break
            if session.alive:
                return session
            self.discard(session)
        try:
            session = await AsyncSession.open(self._conninfo, self._backend.connect_timeout, pool)
        except (SessionBroken, StatementFailed) as exc:
            raise cannot_connect(self._backend.describe, exc) from None
        with self._mutex:
            if not self.closed:
                pool.lent.add(session)
                return session
        session.close()
        raise self.stopped()

    def give_back(self, session: AsyncSession) -> None:
        """Return a session that holds no advisory lock (on its loop)."""
        pool: _LoopPool = session.home
        with self._mutex:
            pool.lent.discard(session)
            if not self.closed and len(pool.idle) < self._keep_idle:
                pool.idle.append(session)
                return
        session.close()

    def discard(self, session: AsyncSession) -> None:
        """Close a session that may hold a lock or is broken (on its loop)."""
        with self._mutex:
            session.home.lent.discard(session)
        session.close()

    def check_holds(self) -> None:
        """Schedule a check of every async hold on its loop (the heartbeat thread)."""
        for hold in self.holds.snapshot():
            with contextlib.suppress(RuntimeError):  # a closed loop: stop() frees the hold
                hold.loop.call_soon_threadsafe(self._start_check, hold)

    def close(self) -> None:
        """The coordinator stops (any thread): close idle sessions, cancel lock waits."""
        with self._mutex:
            self.closed = True
            pools = list(self._pools.values())
            idle = [session for pool in pools for session in pool.idle]
            lent = [session for pool in pools for session in pool.lent]
            for pool in pools:
                pool.idle.clear()
        for session in idle:
            session.close()  # an idle session is on no loop's selector
        for session in lent:
            session.cancel_wait()
        self.holds.lose_all("the coordinator was stopped")

    async def close_async(self) -> None:
        """Close the running loop's sessions, once their statements in flight ended
        (within ``connect_timeout``; a lock wait missed by close()'s cancel gets another)."""
        with self._mutex:
            pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is None:
            return
        end = time.monotonic() + self._backend.connect_timeout
        while any(session.busy for session in pool.lent) and time.monotonic() < end:
            for session in list(pool.lent):
                session.cancel_wait()
            await asyncio.sleep(0.05)
        for session in [*pool.idle, *pool.lent]:
            if session.busy:
                session.shutdown()  # its statement fails now; its task closes it
            else:
                session.close()

    def disown_all(self) -> None:
        """In a forked child: drop every session without disturbing the parent's."""
        self._mutex = threading.Lock()  # another thread of the parent may have held it
        pools, self._pools = list(self._pools.values()), weakref.WeakKeyDictionary()
        for pool in pools:
            for session in [*pool.idle, *pool.lent]:
                session.disown()

    def _start_check(self, hold: _AsyncHold) -> None:
        if hold.active and not hold.releasing and hold.checking is None:
            hold.checking = hold.loop.create_task(self._check(hold))

    async def _check(self, hold: _AsyncHold) -> None:
        session = hold.session
        try:
            listed = await session.drive(session.holds_steps(hold.key))
            reason = None if listed else "the server no longer lists it as held by this session"
        except SessionBroken as exc:
            reason = f"its connection failed: {exc}"
        except StatementFailed:
            reason = None  # no verdict; the next beat asks again
        finally:
            hold.checking = None
        if reason is None:
            metrics.record_renewals("postgresql", 1)
        elif hold.active:
            hold.active = False
            self.discard(session)
            self.holds.lose(hold, reason)
            metrics.record_renewals("postgresql", 0, 1)

    def stopped(self) -> NotStarted:
        """The error of an acquire after the coordinator stopped."""
        return NotStarted(self._backend.describe("the coordinator was stopped"))


class _AsyncHold:
    """One async acquisition: its key, session and loop, and whether it still holds."""

    __slots__ = ("active", "checking", "key", "loop", "releasing", "session")

    def __init__(self, key: int, session: AsyncSession, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.session = session
        self.loop = loop
        self.active = True  # not released, lost or abandoned
        self.releasing = False
        self.checking: asyncio.Task[None] | None = None


class _AsyncAdvisoryLock(AsyncLockHandle):
    def __init__(self, backend: PostgreSQLBackend, sessions: AsyncSessions, key: int,
                 name: bytes, on_lost: LossCallback) -> None:
        self._backend = backend
        self._sessions = sessions
        self._key = key
        self._name = name
        self._on_lost = on_lost
        self._hold: _AsyncHold | None = None

    async def acquire(self, deadline: Deadline) -> int | None:
        try:
            return await self._attempt(deadline)
        except SessionBroken:
            pass  # its session died (a pooled one, with a server restart): once more
        try:
            return await self._attempt(deadline)
        except SessionBroken as exc:
            raise self._backend.unavailable(exc) from None

    async def _attempt(self, deadline: Deadline) -> int | None:
        backend, sessions = self._backend, self._sessions
        session = await sessions.borrow()
        try:
            # Name the key in conch_lock_names with this process's first hold of it.
            name = None if self._key in backend.named_keys else self._name
            token = await session.drive(session.lock_steps(self._key, deadline, name))
        except StatementFailed as exc:
            sessions.discard(session)  # it may hold the lock now: closing it frees it
            raise refused(backend.describe, exc, sessions.closed) from None
        except BaseException:  # cancelled: the session was closed, the lock wait cancelled
            sessions.discard(session)
            raise
        if token is None:
            sessions.give_back(session)
            return None
        if name is not None:
            backend.name_recorded(self._key)
        hold = self._hold = _AsyncHold(self._key, session, asyncio.get_running_loop())
        sessions.holds.add(hold, self._on_lost)
        if sessions.closed:  # stopped while we waited
            sessions.holds.discard(hold)
            self._hold = None
            sessions.discard(session)
            raise sessions.stopped()
        return token

    async def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        hold.releasing = True
        if hold.checking is not None:  # one statement at a time; a check reports a loss itself
            await asyncio.wait([hold.checking])
        self._sessions.holds.discard(hold)
        if not hold.active:  # its session was closed; the report may be on its way
            raise lost_at_release(self._backend.describe, None)
        hold.active = False
        sessions, session = self._sessions, hold.session
        try:
            unlocked = await session.drive(session.unlock_steps(self._key))
        except (SessionBroken, StatementFailed) as exc:
            sessions.discard(session)
            raise lost_at_release(self._backend.describe, exc) from None
        except BaseException:
            sessions.discard(session)
            raise
        if not unlocked:
            sessions.discard(session)
            raise lost_at_release(self._backend.describe, None)
        sessions.give_back(session)

    def abandon(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._sessions.holds.discard(hold)
            hold.active = False
            hold.session.shutdown()  # the server ends the session and frees the lock
