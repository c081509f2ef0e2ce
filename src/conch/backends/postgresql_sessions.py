"""PostgreSQL server sessions for the ``postgresql://`` backend, and the pool that reuses them.

A :class:`Session` is one libpq connection, driven through psycopg's documented
``psycopg.pq`` binding rather than ``psycopg.Connection``: conch runs five fixed
statements with one ``bigint`` parameter, so it needs no adaptation layer, and
driving the socket itself lets every round-trip, the connection's handshake
included, wait in ``poll`` (without the GIL) under a client-side deadline:
``psycopg.Connection.execute`` has none, so a frozen or partitioned server would
hang a release or a heartbeat forever.

Errors come out as two internal exceptions, translated by the backend:
:class:`SessionBroken` (the connection is gone or did not answer in time; the
server frees the session's advisory locks when it notices) and
:class:`StatementFailed` (the server refused a statement; the session still works).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import select
import threading
import time
from collections.abc import Callable

from psycopg import pq

FENCING_SEQUENCE = "conch_fencing_token"
NAMES_TABLE = "conch_lock_names"
"""Lock names by advisory key, for ``conch ls`` (the server only knows the keys): each
process inserts a name with its first hold of it, in the acquiring statement."""
CREATE_NAMES_TABLE = (f"CREATE TABLE IF NOT EXISTS {NAMES_TABLE} "
                      "(key bigint PRIMARY KEY, name bytea NOT NULL)")
_INT8 = 20  # pg_type OIDs of the parameters
_TEXT = 25
# Also record the name (rows of ``taken``: one when the lock was taken). A data-modifying
# CTE runs exactly once, whether or not the query reads it (docs, "WITH Queries").
_NAMING = (f", named AS (INSERT INTO {NAMES_TABLE} (key, name) SELECT $1, decode($2, 'hex')"
           " FROM taken WHERE token IS NOT NULL ON CONFLICT (key) DO NOTHING)"
           " SELECT token FROM taken")

# Name → (SQL, parameter types). Prepared once per session.
_STATEMENTS: dict[bytes, tuple[bytes, list[int]]] = {
    # Lock and token in one round-trip. CASE evaluates nextval() only when the lock
    # was taken (the docs guarantee CASE evaluates only the branch it needs).
    b"conch_try": (f"SELECT CASE WHEN pg_try_advisory_lock($1) "
                   f"THEN nextval('{FENCING_SEQUENCE}') END".encode(), [_INT8]),
    # The token is drawn after pg_advisory_lock() returns: the row it projects from
    # exists only once the lock is granted.
    b"conch_wait": (f"SELECT nextval('{FENCING_SEQUENCE}') "
                    f"FROM pg_advisory_lock($1)".encode(), [_INT8]),
    # The same, naming the key: a hold of a name this process has not named yet.
    b"conch_try_named": (f"WITH taken AS (SELECT CASE WHEN pg_try_advisory_lock($1) "
                         f"THEN nextval('{FENCING_SEQUENCE}') END AS token)"
                         f"{_NAMING}".encode(), [_INT8, _TEXT]),
    b"conch_wait_named": (f"WITH taken AS (SELECT nextval('{FENCING_SEQUENCE}') AS token "
                          f"FROM pg_advisory_lock($1)){_NAMING}".encode(), [_INT8, _TEXT]),
    b"conch_unlock": (b"SELECT pg_advisory_unlock($1)", [_INT8]),
    # pg_locks shows a bigint key as its high half in classid, low half in objid,
    # objsubid 1 (docs, "pg_locks").
    b"conch_holds": (b"SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory'"
                     b" AND pid = pg_backend_pid() AND granted AND objsubid = 1"
                     b" AND classid = (($1 >> 32) & 4294967295)::oid"
                     b" AND objid = ($1 & 4294967295)::oid)", [_INT8]),
    b"conch_lock_timeout": (b"SELECT set_config('lock_timeout', $1, false)", [_TEXT]),
}
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
QUERY_CANCELED = "57014"


class SessionBroken(Exception):
    """The connection failed or did not answer in time; it is closed."""


class StatementFailed(Exception):
    """The server refused a statement (``sqlstate`` says why); the session still works."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{message} (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate


class Session:
    """One server session. Statements are serialised; :meth:`cancel` and :meth:`close`
    may come from any thread."""

    def __init__(self, conninfo: bytes, io_timeout: float) -> None:
        """Connect within ``io_timeout`` seconds (raises :class:`SessionBroken`)."""
        self.io_timeout = io_timeout
        self._pg = _connect(conninfo, io_timeout)
        self._mutex = threading.Lock()
        self._poll = select.poll()
        self._poll.register(self._pg.socket, select.POLLIN)
        self._lock_timeout_ms = 0  # the connection's options set lock_timeout=0
        self._waiting = False
        self._cancelled = False

    def prepare(self) -> None:
        """Prepare the lock statements (the fencing sequence must exist)."""
        for name, (sql, types) in _STATEMENTS.items():
            self._exchange(functools.partial(self._pg.send_prepare, name, sql, types),
                           self.io_timeout)

    def execute(self, sql: str) -> str | None:
        """Run one setup statement; return the first value of its first row, if any."""
        return self._value(lambda: self._pg.send_query(sql.encode()), self.io_timeout)

    def try_lock(self, key: int, name: bytes | None = None) -> int | None:
        """Take ``key`` if it is free: the new fencing token, or ``None``. With ``name``,
        also record it as the key's name."""
        statement = b"conch_try" if name is None else b"conch_try_named"
        value = self._run(statement, key, self.io_timeout, name)
        return None if value is None else int(value)

    def wait_lock(self, key: int, timeout: float | None, name: bytes | None = None) -> int | None:
        """Wait on the server until ``key`` is granted (the fencing token), or up to
        ``timeout`` seconds (``None``: forever) and return ``None``. With ``name``, also
        record it as the key's name."""
        millis = 0 if timeout is None else max(1, math.ceil(timeout * 1000))
        if millis != self._lock_timeout_ms:
            self._run(b"conch_lock_timeout", f"{millis}ms", self.io_timeout)
            self._lock_timeout_ms = millis
        self._waiting = True
        try:
            if self._cancelled:
                raise StatementFailed(QUERY_CANCELED, "cancelled before the wait began")
            # The server answers by lock_timeout; the margin covers the round-trip.
            value = self._run(b"conch_wait" if name is None else b"conch_wait_named", key,
                              None if timeout is None else timeout + self.io_timeout, name)
        except StatementFailed as exc:
            if exc.sqlstate != LOCK_NOT_AVAILABLE:
                raise
        else:
            return None if value is None else int(value)
        finally:
            self._waiting = False
        # lock_timeout also bounds nextval()'s wait for the sequence (an ALTER SEQUENCE
        # in progress), which comes after the grant: a pooled session must hold nothing.
        if self.holds(key):
            self.unlock(key)
        return None

    def unlock(self, key: int) -> bool:
        """Free ``key``; False when this session did not hold it."""
        return self._run(b"conch_unlock", key, self.io_timeout) == "t"

    def holds(self, key: int) -> bool:
        """True while the server lists ``key`` as granted to this session."""
        return self._run(b"conch_holds", key, self.io_timeout) == "t"

    def cancel(self) -> None:
        """Cancel a wait in progress, or the next one (from any thread; best effort)."""
        self._cancelled = True
        if self._waiting:
            # A failed cancel leaves the wait to end by the pool's close().
            with contextlib.suppress(Exception):
                self._pg.get_cancel().cancel()

    @property
    def alive(self) -> bool:
        """False once the connection is known to be gone (checked without a round-trip)."""
        if self._pg.status != pq.ConnStatus.OK:
            return False
        if self._poll.poll(0) and self._mutex.acquire(blocking=False):
            try:  # an idle session that is readable was sent an error or EOF
                self._pg.consume_input()
            except Exception:
                self._pg.finish()
            finally:
                self._mutex.release()
        return self._pg.status == pq.ConnStatus.OK

    def close(self, timeout: float | None = None) -> bool:
        """Close the connection once no statement runs; False if one still ran after
        ``timeout`` seconds."""
        if not self._mutex.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            self._pg.finish()
        finally:
            self._mutex.release()
        return True

    def disown(self) -> None:
        """Forget the connection in a forked child without touching the parent's session:
        the socket number is pointed at /dev/null first, so closing writes nothing to it."""
        self._mutex = threading.Lock()  # another thread of the parent may have held it
        if self._pg.status != pq.ConnStatus.OK:
            return  # already closed: its socket number may belong to another file now
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, self._pg.socket)
        finally:
            os.close(devnull)
        self._pg.finish()

    def query(self, sql: str, params: list[bytes]) -> list[list[str | None]]:
        """Run one statement with text parameters; every row, each value as text."""
        result = self._exchange(lambda: self._pg.send_query_params(sql.encode(), params),
                                self.io_timeout)
        return [[None if (value := result.get_value(row, column)) is None
                 else bytes(value).decode() for column in range(result.nfields)]
                for row in range(result.ntuples)]

    def _run(self, statement: bytes, param: int | str, timeout: float | None,
             name: bytes | None = None) -> str | None:
        params = [str(param).encode()]
        if name is not None:
            params.append(name.hex().encode())
        return self._value(lambda: self._pg.send_query_prepared(statement, params), timeout)

    def _value(self, send: Callable[[], None], timeout: float | None) -> str | None:
        result = self._exchange(send, timeout)
        value = result.get_value(0, 0) if result.ntuples else None
        return None if value is None else bytes(value).decode()

    def _exchange(self, send: Callable[[], None], timeout: float | None) -> pq.abc.PGresult:
        """Send one request and wait for its result (``timeout`` seconds; ``None``: forever).

        The wait is a ``poll`` on the socket, which releases the GIL, unlike libpq's
        blocking calls; a session whose answer is late is closed, as the protocol
        is out of step once a request goes unanswered.
        """
        with self._mutex:
            pg = self._pg
            if pg.status != pq.ConnStatus.OK:
                raise SessionBroken("the connection was closed")
            try:
                send()
                end = None if timeout is None else time.monotonic() + timeout
                while pg.is_busy():
                    if not self._poll.poll(_millis_until(end)):
                        pg.finish()  # the server frees our locks once it sees the close
                        raise SessionBroken(f"no answer from the server within {timeout:.3g} s")
                    pg.consume_input()
                result = pg.get_result()
                while pg.get_result() is not None:
                    pass
            except SessionBroken:
                raise
            except Exception as exc:
                pg.finish()
                raise SessionBroken(str(exc).strip()) from None
            except BaseException:  # interrupted mid-statement: the protocol is out of step
                pg.finish()
                raise
            if result is None:
                pg.finish()
                raise SessionBroken("the server closed the connection")
            if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                return result
            if pg.status != pq.ConnStatus.OK:
                pg.finish()
                raise SessionBroken(pg.get_error_message() or "the connection was lost")
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) or b"?????"
            message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"error"
            raise StatementFailed(sqlstate.decode(), message.decode(errors="replace"))


def _connect(conninfo: bytes, timeout: float) -> pq.abc.PGconn:
    """libpq's non-blocking connect, waiting in ``poll``: ``PQconnectdb`` would hold the
    GIL for the whole handshake (up to ``connect_timeout``), stopping every thread."""
    pg = pq.PGconn.connect_start(conninfo)
    end = time.monotonic() + timeout
    status: int = pq.PollingStatus.WRITING
    while status != pq.PollingStatus.OK:
        if status == pq.PollingStatus.FAILED:
            message = pg.get_error_message()
            pg.finish()
            raise SessionBroken(message)
        waiter = select.poll()  # the socket may change between attempts (addresses, SSL)
        waiter.register(pg.socket,
                        select.POLLIN if status == pq.PollingStatus.READING else select.POLLOUT)
        if not waiter.poll(_millis_until(end)):
            pg.finish()
            raise SessionBroken(f"timeout expired: no answer within {timeout:.3g} s")
        status = pg.connect_poll()
    return pg


def _millis_until(end: float | None) -> int:
    """``poll``'s timeout until ``end`` (monotonic; ``None``: -1, forever)."""
    return -1 if end is None else max(0, math.ceil((end - time.monotonic()) * 1000))


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
