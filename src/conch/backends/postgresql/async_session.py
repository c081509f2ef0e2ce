"""Server sessions for asyncio: psycopg's ``AsyncConnection``, each wait for an answer
bounded by ``connect_timeout`` except a lock wait; one pool of sessions per event loop (a
session-level lock belongs to its connection, and a socket to one loop's selector)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import weakref
from typing import Any

import psycopg
from psycopg.errors import LockNotAvailable

from conch.backends.postgresql.session import Pool, first_value, limits
from conch.backends.postgresql.statements import Conversation, Statement, Steps, T


class AsyncSession(psycopg.AsyncConnection[tuple[Any, ...]]):
    """One server session used by one task at a time on one loop; :meth:`cancel` and
    :meth:`shutdown` may come from any thread."""

    io_timeout = 5.0
    lock_timeout_ms = 0  # the connection's options set lock_timeout=0
    waiting_for_lock = False
    limit: float | None = 5.0

    @classmethod
    async def open(cls, conninfo: str, io_timeout: float) -> AsyncSession:
        """Connect (raises psycopg's errors); every statement is prepared on first use."""
        session = await cls.connect(conninfo, autocommit=True, prepare_threshold=0)
        session.io_timeout = session.limit = io_timeout
        return session

    async def answer(self, statement: Statement) -> object:
        """``statement``'s first value, or the ``LockNotAvailable`` its lock wait ended with.
        Cancelled, psycopg asks the server to cancel the statement before re-raising."""
        self.limit, self.waiting_for_lock = limits(self, statement)
        try:
            cursor = await self.execute(statement.sql, statement.params)
        except LockNotAvailable as exc:
            return exc
        finally:
            self.limit, self.waiting_for_lock = self.io_timeout, False
        return first_value(await cursor.fetchone())

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return await super().wait(gen, interval, self.limit if timeout is None else timeout)
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:  # gone, or out of step with the server after a timeout
                self.pgconn.finish()
            raise

    def shutdown(self) -> None:
        """End the connection now, from any thread: the server frees the session's locks; a
        statement in flight fails. The socket is duplicated first, so a number libpq closed
        meanwhile is never shut."""
        with contextlib.suppress(Exception), socket.socket(
                fileno=os.dup(self.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


async def run(session: AsyncSession, steps: Steps[T]) -> T:
    """Run ``steps`` on ``session`` (psycopg's errors pass through)."""
    talk = Conversation(steps)
    while talk.statement is not None:
        talk.answered(await session.answer(talk.statement))
    return talk.result  # type: ignore[return-value]


class LoopPools:
    """A pool of sessions per event loop."""

    def __init__(self, keep_idle: int, stopped: Any) -> None:
        self._keep_idle = keep_idle
        self._stopped = stopped
        self._mutex = threading.Lock()  # close() comes from another thread
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool[AsyncSession]] = \
            weakref.WeakKeyDictionary()
        self.closed = False

    def running(self) -> Pool[AsyncSession]:
        """The running loop's pool."""
        loop = asyncio.get_running_loop()
        with self._mutex:
            if self.closed:
                raise self._stopped()
            pool = self._pools.get(loop)
            if pool is None:
                pool = self._pools[loop] = Pool(self._keep_idle, self._stopped)
            return pool

    def close(self) -> None:
        """Close every idle session, and cancel the lock waits in progress (any thread)."""
        with self._mutex:
            self.closed = True
            pools = list(self._pools.values())
        for pool in pools:
            for session in pool.close():
                if session.waiting_for_lock:
                    with contextlib.suppress(Exception):  # best effort
                        session.cancel()

    async def close_running(self) -> None:
        """Close the running loop's sessions once their statements in flight ended (within
        ``connect_timeout``; a lock wait missed by close()'s cancel gets another)."""
        with self._mutex:
            pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is None:
            return
        lent = pool.close()
        end = asyncio.get_running_loop().time() + max((s.io_timeout for s in lent), default=0)
        while any(s.lock.locked() for s in lent) and asyncio.get_running_loop().time() < end:
            for session in lent:
                if session.waiting_for_lock:
                    with contextlib.suppress(Exception):
                        session.cancel()
            await asyncio.sleep(0.05)
        for session in lent:
            if session.lock.locked():
                session.shutdown()  # its statement fails now; its task closes it
            else:
                session.pgconn.finish()

    def forget_parent(self) -> None:
        """In a forked child: drop every session without disturbing the parent's."""
        self._mutex = threading.Lock()
        pools, self._pools = list(self._pools.values()), weakref.WeakKeyDictionary()
        for pool in pools:
            pool.forget_parent()
