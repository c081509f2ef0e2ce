"""Who holds the ``postgresql://`` locks (``pg_locks``, ``pg_stat_activity`` and the names
table), and breaking a hold by ending its session (``pg_terminate_backend``)."""

from __future__ import annotations

from typing import Any

import psycopg

from conch.backends.postgresql.lock import Sessions
from conch.backends.postgresql.statements import KEY_MATCHES, NAMES_TABLE
from conch.errors import BackendUnavailable, NotSupported
from conch.introspection import BreakRefused, HolderChanged, HolderInfo, LockInfo

APPLICATION_PREFIX = "conch "
_THIS_DATABASE = "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
# Every held lock of this database (with ``key``: that key's): its waiters, its holder's
# pid, application name and host, and its recorded name (the key rebuilt from its halves).
_HELD = f"""SELECT (SELECT count(*) FROM pg_locks AS w
        WHERE w.locktype = 'advisory' AND w.objsubid = 1 AND w.database = g.database
          AND w.classid = g.classid AND w.objid = g.objid AND NOT w.granted),
       g.pid, a.application_name, coalesce(a.client_hostname, host(a.client_addr), 'local'),
       n.name
FROM pg_locks AS g
LEFT JOIN {NAMES_TABLE} AS n ON n.key = (g.classid::bigint << 32) | g.objid::bigint
LEFT JOIN pg_stat_activity AS a ON a.pid = g.pid
WHERE g.locktype = 'advisory' AND g.objsubid = 1 AND g.granted AND g.{_THIS_DATABASE}
  AND (%(key)s::bigint IS NULL OR ({KEY_MATCHES}))"""
# End the holder's session (pid) only if it still holds the key.
_TERMINATE = f"""SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE {KEY_MATCHES} AND {_THIS_DATABASE} AND granted AND pid = %(pid)s::integer"""


def describe(sessions: Sessions, key: int, name: bytes) -> LockInfo:
    """Lock ``name``, whose advisory key is ``key``."""
    rows = _query(sessions, _HELD, {"key": key})
    return LockInfo(name, _holder(*rows[0][1:4]), rows[0][0]) if rows else LockInfo(name, None, 0)


def held_locks(sessions: Sessions) -> list[LockInfo]:
    """Every held lock of this database whose name is recorded."""
    return [LockInfo(bytes(row[4]), _holder(*row[1:4]), row[0])
            for row in _query(sessions, _HELD, {"key": None}) if row[4] is not None]


def break_hold(sessions: Sessions, key: int, name: bytes, token: int | None) -> LockInfo:
    """End the session holding ``name`` (``token`` cannot be checked: it must be None)."""
    if token is not None:
        raise NotSupported("PostgreSQL does not show a holder's token: break without one")
    lock = describe(sessions, key, name)
    if lock.holder is None:
        return lock
    try:
        ended = _query(sessions, _TERMINATE, {"key": key, "pid": lock.holder.session})
    except psycopg.errors.InsufficientPrivilege as exc:
        raise BreakRefused(f"PostgreSQL refused to end the holder's session (server pid "
                           f"{lock.holder.session}): {exc}. The URL's role must be a member "
                           "of the holder's role or of pg_signal_backend (a superuser's "
                           "session: a superuser)") from None
    if not ended:
        raise HolderChanged(f"lock {lock.name!r} was released while being broken")
    return lock


def _query(sessions: Sessions, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every row of ``sql`` on a pooled session; a failed connection as a conch error."""
    session = sessions.borrow()
    try:
        rows = session.execute(sql, params).fetchall()
    except BaseException as exc:
        refused = isinstance(exc, psycopg.Error)
        sessions.pool.give_back(session, keep=refused and not session.closed)
        if isinstance(exc, psycopg.errors.InsufficientPrivilege) or not refused:
            raise
        raise BackendUnavailable(sessions.describe(exc)) from None
    sessions.pool.give_back(session)
    return rows


def _holder(pid: int, application: str | None, host: str) -> HolderInfo:
    """The holder whose server pid, application name and client host these are."""
    name = application or ""
    member = name[len(APPLICATION_PREFIX):] if name.startswith(APPLICATION_PREFIX) else None
    return HolderInfo(member_id=member, host=host, session=str(pid))
