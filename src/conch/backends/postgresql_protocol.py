"""What the sync and asyncio PostgreSQL sessions share: the SQL, the keys, the errors,
and every conversation with the server, written once as *steps* that never wait.

Steps are generators (psycopg's own sans-I/O design): each yields a :class:`Wait` (this
socket must become readable, or writable, before ``end``) and goes on when sent
``None``. The driver waits as it can: :class:`~conch.backends.postgresql_sessions.Session`
in ``poll`` on the caller's thread, :class:`~conch.backends.postgresql_async.AsyncSession`
on the event loop. A driver whose ``end`` passes throws :class:`Expired` into the steps,
which close the connection: the protocol is out of step once a request goes unanswered.

Errors come out as two exceptions, translated by the backend: :class:`SessionBroken`
(the connection is gone or did not answer in time; the server frees the session's
advisory locks when it notices) and :class:`StatementFailed` (the server refused a
statement; the session still works).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import select
import time
from collections.abc import Callable, Generator
from typing import NamedTuple, TypeVar

from psycopg import pq

from conch.backends.base import Deadline
from conch.errors import BackendUnavailable, ConchError, LockLost, NotStarted

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

T = TypeVar("T")


def advisory_key(name: bytes) -> int:
    """The advisory lock key of ``name``: 64 bits of its SHA-256, as a signed ``bigint``."""
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)


class SessionBroken(Exception):
    """The connection failed or did not answer in time; it is closed."""


class StatementFailed(Exception):
    """The server refused a statement (``sqlstate`` says why); the session still works."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{message} (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate


Describe = Callable[[object], str]
"""The backend's ``describe``: a problem prefixed with the redacted URL, secrets removed."""


def cannot_connect(describe: Describe, exc: Exception) -> BackendUnavailable:
    """A session that could not be opened, as a conch error."""
    return BackendUnavailable(describe(f"cannot connect: {exc}"))


def refused(describe: Describe, exc: StatementFailed, stopped: bool) -> ConchError:
    """A failed lock statement as a conch error (``stopped``: the coordinator was, and
    cancelled the statement)."""
    if exc.sqlstate == QUERY_CANCELED and stopped:
        return NotStarted(describe("the coordinator was stopped"))
    return BackendUnavailable(describe(exc))


def lost_at_release(describe: Describe, exc: Exception | None) -> LockLost:
    """The hold turned out gone at release: its session failed (``exc``), or the server
    did not list the lock as held (``None``)."""
    if exc is None:
        return LockLost(describe("the server did not list the lock as held"))
    return LockLost(describe(
        f"the session holding the lock failed before release ({exc}); "
        "the server freed the lock, another holder may have taken it"))


class Expired(Exception):
    """Thrown into steps by their driver: the wait's ``end`` passed."""


class Wait(NamedTuple):
    """What steps wait for: socket ``fd`` readable (or ``writing``: writable) by ``end``
    (monotonic; ``None``: no limit). ``server_wait``: the server is waiting for a lock."""

    fd: int
    writing: bool
    end: float | None
    server_wait: bool = False


Steps = Generator[Wait, None, T]


def connecting(conninfo: bytes, timeout: float) -> Steps[pq.abc.PGconn]:
    """libpq's non-blocking connect (handshake and authentication) within ``timeout``."""
    pg = pq.PGconn.connect_start(conninfo)
    end = time.monotonic() + timeout
    status: int = pq.PollingStatus.WRITING
    try:
        while status != pq.PollingStatus.OK:
            if status == pq.PollingStatus.FAILED:
                raise SessionBroken(pg.get_error_message())
            # Read the socket each time: it may change between attempts (addresses, SSL).
            yield Wait(pg.socket, status != pq.PollingStatus.READING, end)
            status = pg.connect_poll()
    except Expired:
        pg.finish()
        raise SessionBroken(f"timeout expired: no answer within {timeout:.3g} s") from None
    except BaseException:
        pg.finish()
        raise
    return pg


def exchange(pg: pq.abc.PGconn, send: Callable[[], None], timeout: float | None,
             server_wait: bool = False) -> Steps[pq.abc.PGresult]:
    """Send one request and collect its result, within ``timeout`` seconds (``None``: no
    limit). Interrupted (or abandoned), the steps close the connection."""
    if pg.status != pq.ConnStatus.OK:
        raise SessionBroken("the connection was closed")
    end = None if timeout is None else time.monotonic() + timeout
    try:
        send()
        while pg.flush():  # a non-blocking connection whose request is not all sent yet
            yield Wait(pg.socket, True, end, server_wait)
        while pg.is_busy():
            yield Wait(pg.socket, False, end, server_wait)
            pg.consume_input()
        result = pg.get_result()
        while pg.get_result() is not None:
            pass
    except Expired:
        pg.finish()  # the server frees our locks once it sees the close
        raise SessionBroken(f"no answer from the server within {timeout:.3g} s") from None
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


class SessionSteps:
    """One server session's statements, as steps for a driver to run (one at a time)."""

    def __init__(self, pg: pq.abc.PGconn, io_timeout: float) -> None:
        self.pg = pg
        self.io_timeout = io_timeout
        self._lock_timeout_ms = 0  # the connection's options set lock_timeout=0

    def prepare_steps(self) -> Steps[None]:
        """Prepare the lock statements (the fencing sequence must exist)."""
        for name, (sql, types) in _STATEMENTS.items():
            yield from exchange(self.pg, functools.partial(self.pg.send_prepare, name, sql, types),
                                self.io_timeout)

    def execute_steps(self, sql: str) -> Steps[str | None]:
        """One setup statement: the first value of its first row, if any."""
        result = yield from exchange(self.pg, lambda: self.pg.send_query(sql.encode()),
                                     self.io_timeout)
        return _first_value(result)

    def query_steps(self, sql: str, params: list[bytes]) -> Steps[list[list[str | None]]]:
        """One statement with text parameters: every row, each value as text."""
        result = yield from exchange(
            self.pg, lambda: self.pg.send_query_params(sql.encode(), params), self.io_timeout)
        return [[None if (value := result.get_value(row, column)) is None
                 else bytes(value).decode() for column in range(result.nfields)]
                for row in range(result.ntuples)]

    def lock_steps(self, key: int, deadline: Deadline, name: bytes | None) -> Steps[int | None]:
        """Take ``key`` before ``deadline``: the fencing token, or ``None``; with ``name``,
        also record it as the key's name when taken."""
        if deadline.forever:
            return (yield from self.wait_steps(key, None, name))
        token = yield from self.try_steps(key, name)
        remaining = deadline.remaining()
        if token is not None or not remaining:
            return token
        return (yield from self.wait_steps(key, remaining, name))

    def try_steps(self, key: int, name: bytes | None = None) -> Steps[int | None]:
        """Take ``key`` if it is free: the new fencing token, or ``None``."""
        value = yield from self._run(b"conch_try" if name is None else b"conch_try_named",
                                     key, self.io_timeout, name)
        return None if value is None else int(value)

    def wait_steps(self, key: int, timeout: float | None,
                   name: bytes | None = None) -> Steps[int | None]:
        """Wait on the server until ``key`` is granted (the fencing token), or up to
        ``timeout`` seconds (``None``: forever) and return ``None``."""
        millis = 0 if timeout is None else max(1, math.ceil(timeout * 1000))
        if millis != self._lock_timeout_ms:
            yield from self._run(b"conch_lock_timeout", f"{millis}ms", self.io_timeout)
            self._lock_timeout_ms = millis
        with self.server_waiting():
            try:
                # The server answers by lock_timeout; the margin covers the round-trip.
                value = yield from self._run(
                    b"conch_wait" if name is None else b"conch_wait_named", key,
                    None if timeout is None else timeout + self.io_timeout, name, True)
            except StatementFailed as exc:
                if exc.sqlstate != LOCK_NOT_AVAILABLE:
                    raise
            else:
                return None if value is None else int(value)
        # lock_timeout also bounds nextval()'s wait for the sequence (an ALTER SEQUENCE
        # in progress), which comes after the grant: a pooled session must hold nothing.
        if (yield from self.holds_steps(key)):
            yield from self.unlock_steps(key)
        return None

    def server_waiting(self) -> contextlib.AbstractContextManager[None]:
        """Entered around the lock wait (the sync session marks it cancellable)."""
        return contextlib.nullcontext()

    def unlock_steps(self, key: int) -> Steps[bool]:
        """Free ``key``; False when this session did not hold it."""
        return (yield from self._run(b"conch_unlock", key, self.io_timeout)) == "t"

    def holds_steps(self, key: int) -> Steps[bool]:
        """True while the server lists ``key`` as granted to this session."""
        return (yield from self._run(b"conch_holds", key, self.io_timeout)) == "t"

    def _run(self, statement: bytes, param: int | str, timeout: float | None,
             name: bytes | None = None, server_wait: bool = False) -> Steps[str | None]:
        params = [str(param).encode()]
        if name is not None:
            params.append(name.hex().encode())
        result = yield from exchange(
            self.pg, lambda: self.pg.send_query_prepared(statement, params), timeout, server_wait)
        return _first_value(result)


def _first_value(result: pq.abc.PGresult) -> str | None:
    value = result.get_value(0, 0) if result.ntuples else None
    return None if value is None else bytes(value).decode()


def idle_alive(pg: pq.abc.PGconn, readable: select.poll) -> bool:
    """False once an idle connection is known to be gone (checked without a round-trip;
    ``readable`` polls its socket for input)."""
    if pg.status != pq.ConnStatus.OK:
        return False
    if readable.poll(0):
        try:  # an idle session that is readable was sent an error or EOF
            pg.consume_input()
        except Exception:
            pg.finish()
    return pg.status == pq.ConnStatus.OK


def disown(pg: pq.abc.PGconn) -> None:
    """Forget a connection in a forked child without touching the parent's session: the
    socket number is pointed at /dev/null first, so closing writes nothing to it."""
    if pg.status != pq.ConnStatus.OK:
        return  # already closed: its socket number may belong to another file now
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(devnull, pg.socket)
    finally:
        os.close(devnull)
    pg.finish()
