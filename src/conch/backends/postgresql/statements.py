"""What conch asks PostgreSQL, for sync and asyncio sessions alike: *steps*, generators that
yield the next :class:`Statement` and are sent its first value (or thrown its error)."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any, NamedTuple, TypeVar

from psycopg.errors import LockNotAvailable

from conch.backends.base import Deadline

T = TypeVar("T")
FENCING_SEQUENCE = "conch_fencing_token"
NAMES_TABLE = "conch_lock_names"  # names by key, for `conch ls`: recorded with a first hold
SETUP = {  # what connect() creates when missing
    FENCING_SEQUENCE: f"CREATE SEQUENCE IF NOT EXISTS {FENCING_SEQUENCE} AS bigint",
    NAMES_TABLE: f"CREATE TABLE IF NOT EXISTS {NAMES_TABLE} "
                 "(key bigint PRIMARY KEY, name bytea NOT NULL)",
}
# Parameters: $1 the key, $2 the name to record (_NAMING), then the lock_timeout to set.
# Lock and token in one round-trip: CASE evaluates nextval() only when the lock was taken.
_TRY = ("SELECT CASE WHEN pg_try_advisory_lock{0}($1::bigint)"
        f" THEN nextval('{FENCING_SEQUENCE}') END AS token")
# lock_timeout (each wait sets it), the lock, the token: CASE evaluates its cases in order.
_WAIT = ("SELECT CASE WHEN set_config('lock_timeout', ${1}, false) IS NULL THEN NULL"
         " WHEN pg_advisory_lock{0}($1::bigint) IS NULL THEN NULL"
         f" ELSE nextval('{FENCING_SEQUENCE}') END AS token")
# The same, recording the name when taken: a data-modifying CTE runs exactly once.
_NAMING = (f"WITH taken AS ({{}}), named AS (INSERT INTO {NAMES_TABLE} (key, name) "
           "SELECT $1::bigint, $2::bytea FROM taken WHERE token IS NOT NULL"
           " ON CONFLICT (key) DO NOTHING) SELECT token FROM taken")


def _take_statements(naming: bool, shared: bool) -> tuple[str, str]:
    """Try and wait, recording the name or not; a shared hold takes the key in share mode."""
    mode = "_shared" if shared else ""
    trying, waiting = _TRY.format(mode), _WAIT.format(mode, 3 if naming else 2)
    return (_NAMING.format(trying), _NAMING.format(waiting)) if naming else (trying, waiting)


TAKE = {(naming, shared): _take_statements(naming, shared)
        for naming in (False, True) for shared in (False, True)}
_UNLOCK = {False: "SELECT pg_advisory_unlock($1::bigint)",
           True: "SELECT pg_advisory_unlock_shared($1::bigint)"}
THIS_DATABASE = "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
# pg_locks shows a bigint key's high half in classid, its low half in objid, objsubid 1.
_KEY_MATCHES = ("locktype = 'advisory' AND objsubid = 1"
               " AND classid = ((%(key)s::bigint >> 32) & 4294967295)::oid"
               " AND objid = (%(key)s::bigint & 4294967295)::oid")
# Every held lock of this database (with ``key``: that key's): its waiters, its holder's
# pid, application name and host, and its recorded name (the key rebuilt from its halves).
HELD = f"""SELECT (SELECT count(*) FROM pg_locks AS w
        WHERE w.locktype = 'advisory' AND w.objsubid = 1 AND w.database = g.database
          AND w.classid = g.classid AND w.objid = g.objid AND NOT w.granted),
       g.pid, a.application_name, coalesce(a.client_hostname, host(a.client_addr), 'local'),
       n.name
FROM pg_locks AS g
LEFT JOIN {NAMES_TABLE} AS n ON n.key = (g.classid::bigint << 32) | g.objid::bigint
LEFT JOIN pg_stat_activity AS a ON a.pid = g.pid
WHERE g.locktype = 'advisory' AND g.objsubid = 1 AND g.granted AND g.{THIS_DATABASE}
  AND (%(key)s::bigint IS NULL OR ({_KEY_MATCHES}))"""
# End the holder's session (pid) only if it still holds the key.
TERMINATE = f"""SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE {_KEY_MATCHES} AND {THIS_DATABASE} AND granted AND pid = %(pid)s::integer"""
# Space 1: a bigint key; 2: two int keys, $1 = (first << 32) | (second & 0xffffffff).
_HOLDS = ("SELECT EXISTS (SELECT FROM pg_locks WHERE "
          f"{_KEY_MATCHES.replace('%(key)s', '$1').replace('objsubid = 1', 'objsubid = $2::int2')}"
          " AND pid = pg_backend_pid() AND granted)")


class Statement(NamedTuple):
    """SQL, its parameters (text), and how long the server may wait for a lock (``None``: ever)."""

    sql: str
    params: tuple[bytes, ...]
    server_wait: float | None = 0.0

    def limit(self, io_timeout: float) -> float | None:
        """The longest wait for the answer (``None``: none)."""
        return None if self.server_wait is None else io_timeout + self.server_wait


Steps = Generator[Statement, bytes | None, T]  # sent each first value, as text (b"t", b"42")


def take(key: int, deadline: Deadline, name: bytes | None, shared: bool = False
         ) -> Steps[bytes | None]:
    """Take ``key`` (``shared``: in share mode) before ``deadline`` (recording ``name`` if
    given): the token, or ``None``."""
    params = (b"%d" % key,) if name is None else (b"%d" % key, b"\\x" + name.hex().encode())
    trying, waiting = TAKE[name is not None, shared]
    remaining = deadline.remaining()
    if not deadline.forever:
        token = yield Statement(trying, params)
        remaining = deadline.remaining()
        if token is not None or not remaining:
            return token
    millis = 0 if remaining is None else max(1, math.ceil(remaining * 1000))
    try:
        return (yield Statement(waiting, (*params, b"%dms" % millis), remaining))
    except LockNotAvailable:  # lock_timeout expired; it also bounds nextval()'s wait for the
        pass  # sequence (an ALTER SEQUENCE in progress), after the grant: hold nothing
    if (yield from holds(key)):
        yield from unlock(key, shared)
    return None


def unlock(key: int, shared: bool = False) -> Steps[bool]:
    """Free ``key`` (held in share mode if ``shared``): False when this session did not
    hold it."""
    return (yield Statement(_UNLOCK[shared], (b"%d" % key,))) == b"t"


def holds(key: int, space: int = 1) -> Steps[bool]:
    """True while the server lists ``key`` (of key ``space``, see ``_HOLDS``) as granted to
    this session."""
    return (yield Statement(_HOLDS, (b"%d" % key, b"%d" % space))) == b"t"


def advance(steps: Steps[Any], answer: Any) -> tuple[Statement | None, object]:
    """The next statement of ``steps`` sent ``answer`` (thrown if an exception), or ``None``
    and what the steps returned or raised."""
    try:
        if isinstance(answer, BaseException):
            return steps.throw(answer), None
        return steps.send(answer), None
    except StopIteration as done:
        return None, done.value
    except BaseException as exc:
        return None, exc
