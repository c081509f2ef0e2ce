"""PostgreSQL server sessions for the ``postgresql://`` backend, and the pool that reuses them.

A :class:`Session` is one libpq connection, driven through psycopg's documented
``psycopg.pq`` binding rather than ``psycopg.Connection``: conch runs a few fixed
statements with one ``bigint`` parameter, so it needs no adaptation layer, and
driving the socket itself lets every round-trip, the connection's handshake
included, wait in ``poll`` (without the GIL; under eventlet, in its green ``select``:
:mod:`conch.backends.kit.socket_wait`) under a client-side deadline:
``psycopg.Connection.execute`` has none, so a frozen or partitioned server would
hang a release or a heartbeat forever. The statements themselves, and what each
answer means, are :mod:`conch.backends.postgresql.protocol`'s steps, shared with the
asyncio session.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
from psycopg import pq

from conch.backends.base import Deadline
from conch.backends.kit.socket_wait import SocketWait
from conch.backends.postgresql.protocol import QUERY_CANCELED, SessionSteps
from conch.backends.postgresql.wire import (
    Expired,
    SessionBroken,
    StatementFailed,
    Steps,
    T,
    cancelling,
    connecting,
    disown,
    idle_alive,
)


class Session(SessionSteps):
    """One server session. Statements are serialised; :meth:`cancel` and :meth:`close`
    may come from any thread."""

    def __init__(self, conninfo: bytes, io_timeout: float) -> None:
        """Connect within ``io_timeout`` seconds (raises :class:`SessionBroken`)."""
        # libpq's non-blocking connect, waiting in poll: PQconnectdb would hold the GIL
        # for the whole handshake (up to connect_timeout), stopping every thread.
        super().__init__(_drive(connecting(conninfo, io_timeout)), io_timeout)
        self._mutex = threading.Lock()
        self._readable = SocketWait(self.pg.socket)
        self._waiting = False
        self._cancelled = False

    def prepare(self) -> None:
        """Prepare the lock statements (the fencing sequence must exist)."""
        self._drive(self.prepare_steps())

    def execute(self, sql: str) -> str | None:
        """Run one setup statement; return the first value of its first row, if any."""
        return self._drive(self.execute_steps(sql))

    def query(self, sql: str, params: list[bytes]) -> list[list[str | None]]:
        """Run one statement with text parameters; every row, each value as text."""
        return self._drive(self.query_steps(sql, params))

    def lock(self, key: int, deadline: Deadline, name: bytes | None = None) -> int | None:
        """Take ``key`` before ``deadline``: the fencing token, or ``None``. With ``name``,
        also record it as the key's name."""
        return self._drive(self.lock_steps(key, deadline, name))

    def unlock(self, key: int) -> bool:
        """Free ``key``; False when this session did not hold it."""
        return self._drive(self.unlock_steps(key))

    def holds(self, key: int) -> bool:
        """True while the server lists ``key`` as granted to this session."""
        return self._drive(self.holds_steps(key))

    @contextlib.contextmanager
    def server_waiting(self) -> Iterator[None]:
        self._waiting = True
        try:
            if self._cancelled:
                raise StatementFailed(QUERY_CANCELED, "cancelled before the wait began")
            yield
        finally:
            self._waiting = False

    def cancel(self) -> None:
        """Cancel a wait in progress, or the next one (from any thread; best effort)."""
        self._cancelled = True
        if self._waiting:
            # A failed cancel leaves the wait to end by the pool's close().
            with contextlib.suppress(Exception):
                self._request_cancel()

    def _request_cancel(self) -> None:
        """Ask the server to cancel the statement in flight. With libpq 17 the request
        waits like every round-trip, within ``io_timeout`` (and green under eventlet);
        older libpq's blocking request holds the thread (and eventlet's hub) until sent."""
        if not psycopg.capabilities.has_cancel_safe():
            self.pg.get_cancel().cancel()
            return
        canceller = self.pg.cancel_conn()
        canceller.start()
        _drive(cancelling(canceller, time.monotonic() + self.io_timeout))

    @property
    def alive(self) -> bool:
        """False once the connection is known to be gone (checked without a round-trip)."""
        if not self._mutex.acquire(blocking=False):
            return self.pg.status == pq.ConnStatus.OK
        try:
            return idle_alive(self.pg, self._readable)
        finally:
            self._mutex.release()

    def close(self, timeout: float | None = None) -> bool:
        """Close the connection once no statement runs; False if one still ran after
        ``timeout`` seconds."""
        if not self._mutex.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            self.pg.finish()
        finally:
            self._mutex.release()
        return True

    def disown(self) -> None:
        """Forget the connection in a forked child without touching the parent's session."""
        self._mutex = threading.Lock()  # another thread of the parent may have held it
        disown(self.pg)

    def _drive(self, steps: Steps[T]) -> T:
        with self._mutex:
            return _drive(steps, self._readable)


def _drive(steps: Steps[T], readable: SocketWait | None = None) -> T:
    """Run ``steps``, each wait a :class:`SocketWait` (which releases the GIL, or yields to
    eventlet's hub, unlike libpq's blocking calls); ``readable``: the one for reading the
    session's socket."""
    try:
        wait = next(steps)
        while True:
            waiting = readable
            if waiting is None or wait.writing:
                waiting = SocketWait(wait.fd, wait.writing)
            wait = steps.send(None) if waiting.until(wait.end) else steps.throw(Expired())
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except BaseException:
        steps.close()  # interrupted mid-statement: the steps close the connection
        raise


class SessionPool:
    """Idle sessions, each holding no advisory lock, plus the sessions lent out."""

    def __init__(self, connect: Callable[[], Session], keep_idle: int) -> None:
        self._connect = connect
        self._keep_idle = keep_idle
        self._mutex = threading.Lock()
        self._idle: list[Session] = []
        self._lent: set[Session] = set()
        self.closed = False

    def borrow(self) -> Session:
        """An idle live session, or a new one (raises what ``connect`` raises)."""
        while True:
            with self._mutex:
                if self.closed:
                    raise SessionBroken("the coordinator was stopped")
                session = self._idle.pop() if self._idle else None
                if session is not None:
                    self._lent.add(session)
            if session is None:
                break
            if session.alive:
                return session
            self.discard(session)
        session = self._connect()
        with self._mutex:
            if not self.closed:
                self._lent.add(session)
                return session
        session.close()
        raise SessionBroken("the coordinator was stopped")

    def give_back(self, session: Session) -> None:
        """Return a session that holds no advisory lock."""
        with self._mutex:
            self._lent.discard(session)
            if not self.closed and len(self._idle) < self._keep_idle:
                self._idle.append(session)
                return
        session.close()

    def discard(self, session: Session) -> None:
        """Close a session that may hold a lock or is broken (closing frees its locks)."""
        with self._mutex:
            self._lent.discard(session)
        session.close()

    def close(self) -> None:
        """Close every session: cancel waits in progress, then close each once idle."""
        with self._mutex:
            self.closed = True
            sessions, self._idle = [*self._idle, *self._lent], []
        for session in sessions:
            session.cancel()
        for session in sessions:
            # A cancel sent before the wait reached the server is lost: send it again.
            for _ in range(max(1, math.ceil(session.io_timeout / 0.5))):
                if session.close(timeout=0.5):
                    break
                session.cancel()

    def disown_all(self) -> None:
        """In a forked child: drop every session without disturbing the parent's."""
        self._mutex = threading.Lock()  # another thread of the parent may have held it
        sessions, self._idle, self._lent = [*self._idle, *self._lent], [], set()
        for session in sessions:
            session.disown()
