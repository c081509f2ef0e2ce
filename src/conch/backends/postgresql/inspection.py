"""Who holds the ``postgresql://`` locks, and breaking a hold.

The server knows who holds an advisory lock and who waits for it: ``pg_locks``
lists both, with each session's server pid (docs, "pg_locks"), and
``pg_stat_activity`` tells that session's ``application_name`` (``conch`` and the
member id, set at connect, cut at 63 bytes by the server) and client address.
Lock names come from ``conch_lock_names``, where each process records a name with
its first hold of it. So a hold costs nothing extra to describe, and what would
(its token, start time and client pid: a write per acquire, which measured +50 %
on an uncontended acquire) is not shown. Advisory locks have no TTL.

Breaking terminates the holder's session with ``pg_terminate_backend``: the
server frees its lock at once, the next waiter gets it, and the holder's session
check (every ``heartbeat`` seconds, default 2) finds the session gone and reports
the loss. Each conch session holds one lock, so nothing else is freed. It needs
the right to signal that session: the URL's role must be a member of the holder's
role or of ``pg_signal_backend`` (only a superuser may end a superuser's session).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from conch.backends.postgresql.protocol import NAMES_TABLE
from conch.backends.postgresql.session import Session
from conch.backends.postgresql.wire import SessionBroken, StatementFailed
from conch.errors import NotStarted, NotSupported
from conch.introspection import BreakRefused, HolderChanged, HolderInfo, LockInfo

if TYPE_CHECKING:
    from conch.backends.postgresql.backend import PostgreSQLBackend

T = TypeVar("T")

INSUFFICIENT_PRIVILEGE = "42501"
APPLICATION_PREFIX = "conch "

# pg_locks shows an advisory lock on a 64-bit key with the key's high half in
# classid, its low half in objid, and objsubid 1 (docs, "pg_locks"); advisory locks
# belong to a database.
_THIS_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())"
_HOLDER_COLUMNS = ("g.pid, a.application_name, "
                   "coalesce(a.client_hostname, host(a.client_addr), 'local')")

# $1 the key. One row: the waiters, then the holder's pid, application name and host
# (NULL: free).
_DESCRIBE = f"""
WITH l AS (
  SELECT pid, granted FROM pg_locks
  WHERE locktype = 'advisory' AND objsubid = 1 AND database = {_THIS_DATABASE}
    AND classid = (($1::bigint >> 32) & 4294967295)::oid
    AND objid = ($1::bigint & 4294967295)::oid)
SELECT (SELECT count(*) FROM l WHERE NOT granted), {_HOLDER_COLUMNS}
FROM (SELECT 1) AS one
LEFT JOIN l AS g ON g.granted
LEFT JOIN pg_stat_activity AS a ON a.pid = g.pid"""

# Every held lock of this database whose name is recorded: waiters, holder, name.
# The key is rebuilt from its halves to use the names' primary key.
_LIST = f"""
SELECT (SELECT count(*) FROM pg_locks AS w
        WHERE w.locktype = 'advisory' AND w.objsubid = 1 AND w.database = g.database
          AND w.classid = g.classid AND w.objid = g.objid AND NOT w.granted),
       {_HOLDER_COLUMNS}, encode(n.name, 'hex')
FROM pg_locks AS g
JOIN {NAMES_TABLE} AS n ON n.key = (g.classid::bigint << 32) | g.objid::bigint
LEFT JOIN pg_stat_activity AS a ON a.pid = g.pid
WHERE g.locktype = 'advisory' AND g.objsubid = 1 AND g.granted
  AND g.database = {_THIS_DATABASE}"""

# $1 the key, $2 the holder's pid: end its session only if it still holds the key.
_TERMINATE = f"""
SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND database = {_THIS_DATABASE}
  AND classid = (($1::bigint >> 32) & 4294967295)::oid
  AND objid = ($1::bigint & 4294967295)::oid AND granted AND pid = $2::integer"""


def inspecting(backend: PostgreSQLBackend, look: Callable[[Session], T]) -> T:
    """``look`` with a pooled session (inspecting takes no advisory lock), errors translated."""
    try:
        session = backend.pool.borrow()
    except SessionBroken:
        raise NotStarted(backend.describe("the coordinator was stopped")) from None
    try:
        found = look(session)
    except (SessionBroken, StatementFailed) as exc:
        backend.pool.discard(session)
        raise backend.unavailable(exc) from None
    except BaseException:
        backend.pool.discard(session)
        raise
    backend.pool.give_back(session)
    return found


def describe(session: Session, key: int, name: bytes) -> LockInfo:
    """Lock ``name``, whose advisory key is ``key``."""
    [row] = session.query(_DESCRIBE, [str(key).encode()])
    waiters = int(row[0] or 0)
    return LockInfo(name, None if row[1] is None else _holder(row[1:4]), waiters)


def held_locks(session: Session) -> list[LockInfo]:
    """Every held lock of this database whose name is recorded."""
    return [LockInfo(bytes.fromhex(row[4] or ""), _holder(row[1:4]), int(row[0] or 0))
            for row in session.query(_LIST, [])]


def break_hold(session: Session, key: int, name: bytes, token: int | None) -> LockInfo:
    """End the session holding ``name`` (``token`` cannot be checked: it must be None)."""
    if token is not None:
        raise NotSupported("PostgreSQL does not show a holder's token: break without one")
    lock = describe(session, key, name)
    holder = lock.holder
    if holder is None:
        return lock
    try:
        ended = session.query(_TERMINATE, [str(key).encode(), str(holder.session).encode()])
    except StatementFailed as exc:
        if exc.sqlstate != INSUFFICIENT_PRIVILEGE:
            raise
        raise BreakRefused(
            f"PostgreSQL refused to end the holder's session (server pid {holder.session}): "
            f"{exc}. The URL's role must be a member of the holder's role or of "
            "pg_signal_backend (a superuser's session: a superuser)") from None
    if not ended:
        raise HolderChanged(f"lock {lock.name!r} was released while being broken")
    return lock


def _holder(row: list[str | None]) -> HolderInfo:
    """``row``: the holder's server pid, application name and client host."""
    pid, application, host = row
    member = None
    if application is not None and application.startswith(APPLICATION_PREFIX):
        member = application[len(APPLICATION_PREFIX):]
    return HolderInfo(member_id=member, host=host, session=pid)
