"""What conch asks PostgreSQL and what each answer means, once for the sync and asyncio
sessions: *steps*, generators that yield the :class:`Statement` to run next and are sent its
first value (or thrown what it raised)."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any, NamedTuple, Protocol, TypeVar

from psycopg.errors import LockNotAvailable
from psycopg.types.numeric import Int8

from conch.backends.base import Deadline

T = TypeVar("T")
FENCING_SEQUENCE = "conch_fencing_token"
NAMES_TABLE = "conch_lock_names"  # names by key, for `conch ls`: recorded with a first hold
SETUP = {  # what connect() creates when missing
    FENCING_SEQUENCE: f"CREATE SEQUENCE IF NOT EXISTS {FENCING_SEQUENCE} AS bigint",
    NAMES_TABLE: f"CREATE TABLE IF NOT EXISTS {NAMES_TABLE} "
                 "(key bigint PRIMARY KEY, name bytea NOT NULL)",
}
# Lock and token in one round-trip: CASE evaluates nextval() only when the lock was taken.
_TRY = (f"SELECT CASE WHEN pg_try_advisory_lock(%s) THEN nextval('{FENCING_SEQUENCE}') END"
        " AS token")
# The row nextval() projects from exists only once pg_advisory_lock() has returned.
_WAIT = f"SELECT nextval('{FENCING_SEQUENCE}') AS token FROM pg_advisory_lock(%s)"
# The same, recording the name when taken: a data-modifying CTE runs exactly once.
_NAMING = (f"WITH taken AS ({{}}), named AS (INSERT INTO {NAMES_TABLE} (key, name) "
           "SELECT %s, %s FROM taken WHERE token IS NOT NULL ON CONFLICT (key) DO NOTHING) "
           "SELECT token FROM taken")
_UNLOCK = "SELECT pg_advisory_unlock(%s)"
# pg_locks shows a bigint key's high half in classid, its low half in objid, objsubid 1.
KEY_MATCHES = ("locktype = 'advisory' AND objsubid = 1"
               " AND classid = ((%(key)s::bigint >> 32) & 4294967295)::oid"
               " AND objid = (%(key)s::bigint & 4294967295)::oid")
_HOLDS = (f"SELECT EXISTS (SELECT FROM pg_locks WHERE {KEY_MATCHES}"
          " AND pid = pg_backend_pid() AND granted)")
_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, false)"


class Statement(NamedTuple):
    """SQL, its parameters, and how long the server may wait for a lock (``None``: forever)."""

    sql: str
    params: tuple[Any, ...] | dict[str, Any]
    server_wait: float | None = 0.0

    def limit(self, io_timeout: float) -> float | None:
        """The longest wait for the answer (``None``: none)."""
        return None if self.server_wait is None else io_timeout + self.server_wait


Steps = Generator[Statement, Any, T]


class Session(Protocol):
    lock_timeout_ms: int


def take(session: Session, key: int, deadline: Deadline, name: bytes | None) -> Steps[int | None]:
    """Take ``key`` before ``deadline`` (recording ``name`` if given): the token, or ``None``."""
    params = (Int8(key),) if name is None else (Int8(key), Int8(key), name)
    remaining = deadline.remaining()
    token: int | None
    if not deadline.forever:
        token = yield Statement(_TRY if name is None else _NAMING.format(_TRY), params)
        remaining = deadline.remaining()
        if token is not None or not remaining:
            return token
    millis = 0 if remaining is None else max(1, math.ceil(remaining * 1000))
    if millis != session.lock_timeout_ms:
        yield Statement(_LOCK_TIMEOUT, (f"{millis}ms",))
        session.lock_timeout_ms = millis
    try:
        token = yield Statement(_WAIT if name is None else _NAMING.format(_WAIT), params, remaining)
        return token
    except LockNotAvailable:  # lock_timeout expired; it also bounds nextval()'s wait for the
        pass  # sequence (an ALTER SEQUENCE in progress), after the grant: hold nothing
    if (yield from holds(key)):
        yield from unlock(key)
    return None


def unlock(key: int) -> Steps[bool]:
    """Free ``key``: False when this session did not hold it."""
    return (yield Statement(_UNLOCK, (Int8(key),))) is True


def holds(key: int) -> Steps[bool]:
    """True while the server lists ``key`` as granted to this session."""
    return (yield Statement(_HOLDS, {"key": Int8(key)})) is True


def advance(steps: Steps[Any], answer: object) -> tuple[Statement | None, object]:
    """The next statement of ``steps`` once sent ``answer`` (thrown in if an exception), or
    ``None`` and what the steps returned or raised."""
    try:
        if isinstance(answer, BaseException):
            return steps.throw(answer), None
        return steps.send(answer), None
    except StopIteration as done:
        return None, done.value
    except BaseException as exc:
        return None, exc
