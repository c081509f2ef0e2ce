"""What the sync and asyncio PostgreSQL sessions share: the SQL, the keys, the errors,
and every statement with what its answer means, written once as steps that never wait.

:class:`SessionSteps` runs each statement through :mod:`conch.backends.postgresql.wire`'s
steps; a session drives them (:class:`~conch.backends.postgresql.session.Session` in
``poll``, :class:`~conch.backends.postgresql.async_session.AsyncSession` on the event
loop). The wire's two exceptions, :class:`~conch.backends.postgresql.wire.SessionBroken`
and :class:`~conch.backends.postgresql.wire.StatementFailed`, become conch errors here
(:func:`cannot_connect`, :func:`refused`, :func:`lost_at_release`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
from collections.abc import Callable

from psycopg import pq

from conch.backends.base import Deadline
from conch.backends.postgresql.wire import StatementFailed, Steps, exchange
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


def advisory_key(name: bytes) -> int:
    """The advisory lock key of ``name``: 64 bits of its SHA-256, as a signed ``bigint``."""
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)


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
    did not list the lock as held or was found to have ended the session (``None``)."""
    if exc is None:
        return LockLost(describe("the server no longer held the lock for this session"))
    return LockLost(describe(
        f"the session holding the lock failed before release ({exc}); "
        "the server freed the lock, another holder may have taken it"))


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
