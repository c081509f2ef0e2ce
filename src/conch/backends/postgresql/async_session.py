"""One PostgreSQL server session driven on an asyncio event loop.

The sync :class:`~conch.backends.postgresql.session.Session` waits for its socket in
``poll``; this one runs the very same steps (:mod:`conch.backends.postgresql.protocol`,
:mod:`conch.backends.postgresql.wire`) with libpq in non-blocking mode and the socket
registered on the loop (``add_reader``/``add_writer``) only while an answer is awaited.

A cancelled statement closes the connection (the server frees whatever the session
holds when it sees the close); a cancelled *lock wait* first asks the server to cancel
it, since a server process waiting for a lock does not read its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Awaitable
from typing import Any, cast

import psycopg
from psycopg import pq

from conch.backends.kit.socket_wait import SocketWait
from conch.backends.postgresql.protocol import SessionSteps
from conch.backends.postgresql.wire import (
    Expired,
    Steps,
    T,
    Wait,
    cancelling,
    connecting,
    disown,
    idle_alive,
)


class AsyncSession(SessionSteps):
    """A server session used by one task at a time on one loop; :meth:`cancel_wait` and
    :meth:`shutdown` may come from any thread."""

    def __init__(self, pg: pq.abc.PGconn, io_timeout: float, home: Any) -> None:
        super().__init__(pg, io_timeout)
        pg.nonblocking = 1
        self.home = home
        """The pool it belongs to."""
        self.busy = False  # a statement is in flight (its socket is on the loop)
        self.waiting = False  # ... and it is the lock wait
        self._readable = SocketWait(pg.socket)
        self._canceller = pg.get_cancel()  # usable from any thread, even once pg is closed
        # A descriptor of our own for the socket: shutdown() from another thread never
        # reaches a reused descriptor number, whatever libpq closed meanwhile.
        self._socket: socket.socket | None = socket.socket(fileno=os.dup(pg.socket))
        self._socket_mutex = threading.Lock()

    @classmethod
    async def open(cls, conninfo: bytes, io_timeout: float, home: Any) -> AsyncSession:
        """Connect and prepare within ``io_timeout`` seconds each (raises
        :class:`~conch.backends.postgresql.wire.SessionBroken` or ``StatementFailed``)."""
        session = cls(await _drive(connecting(conninfo, io_timeout)), io_timeout, home)
        try:
            await session.drive(session.prepare_steps())
        except BaseException:
            session.close()
            raise
        return session

    async def drive(self, steps: Steps[T]) -> T:
        """Run ``steps`` on the running loop. Cancelled, the connection is closed first,
        and a lock wait is cancelled on the server."""
        loop = asyncio.get_running_loop()
        self.busy = True
        try:
            wait = next(steps)
            while True:
                self.waiting = wait.server_wait
                try:
                    ready = await _ready(loop, wait)
                except asyncio.CancelledError:
                    request = self._cancel_request() if wait.server_wait else None
                    steps.close()  # closes the connection
                    if request is not None:
                        with contextlib.suppress(Exception):  # best effort
                            await asyncio.wait_for(request, self.io_timeout)
                    raise
                wait = steps.send(None) if ready else steps.throw(Expired())
        except StopIteration as done:
            return cast(T, done.value)
        except BaseException:
            steps.close()  # interrupted mid-statement: the steps close the connection
            raise
        finally:
            self.busy = self.waiting = False

    @property
    def alive(self) -> bool:
        """False once the connection is known to be gone (no round-trip; idle session)."""
        return idle_alive(self.pg, self._readable)

    def cancel_wait(self) -> None:
        """Ask the server to cancel the lock wait in progress (any thread; blocking, best
        effort: a request that comes before the wait began is lost)."""
        if self.waiting:
            with contextlib.suppress(Exception):
                self._canceller.cancel()

    def shutdown(self) -> None:
        """End the connection now, from any thread, leaving the descriptors to :meth:`close`:
        the server frees the session's locks; a statement in flight fails."""
        with self._socket_mutex:
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the connection (on its loop, with no statement in flight)."""
        self.pg.finish()
        with self._socket_mutex:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def disown(self) -> None:
        """Forget the connection in a forked child without touching the parent's session."""
        disown(self.pg)
        with self._socket_mutex:  # closing a descriptor the parent also has sends nothing
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _cancel_request(self) -> Awaitable[None] | None:
        """Start asking the server to cancel the statement in flight; await to finish.
        Made before the connection closes (libpq needs it to address the request)."""
        try:
            if psycopg.capabilities.has_cancel_safe():  # libpq 17: non-blocking
                canceller = self.pg.cancel_conn()
                canceller.start()
                return _drive(cancelling(canceller, None))
        except Exception:
            return None
        from conch.aio.threads import pool  # older libpq: a blocking request, on a thread

        return asyncio.wrap_future(pool().submit(self._canceller.cancel))


async def _drive(steps: Steps[T]) -> T:
    """Run steps that hold no session (connecting, cancelling) on the running loop."""
    loop = asyncio.get_running_loop()
    try:
        wait = next(steps)
        while True:
            wait = steps.send(None) if await _ready(loop, wait) else steps.throw(Expired())
    except StopIteration as done:
        return cast(T, done.value)
    except BaseException:
        steps.close()
        raise


async def _ready(loop: asyncio.AbstractEventLoop, wait: Wait) -> bool:
    """True once ``wait.fd`` is ready, False once ``wait.end`` passed."""
    ready: asyncio.Future[bool] = loop.create_future()
    if wait.writing:
        loop.add_writer(wait.fd, _settle, ready, True)
    else:
        loop.add_reader(wait.fd, _settle, ready, True)
    timer = None if wait.end is None else \
        loop.call_later(max(0.0, wait.end - time.monotonic()), _settle, ready, False)
    try:
        return await ready
    finally:
        if wait.writing:
            loop.remove_writer(wait.fd)
        else:
            loop.remove_reader(wait.fd)
        if timer is not None:
            timer.cancel()


def _settle(future: asyncio.Future[bool], ready: bool) -> None:
    if not future.done():
        future.set_result(ready)
