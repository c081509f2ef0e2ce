"""Who holds the ``mysql://`` locks (``IS_USED_LOCK`` and the name's ``conch_fencing`` row;
waiters from the process list), and breaking a hold with ``KILL CONNECTION``
(docs/introspection.md)."""

from __future__ import annotations

import collections
import re
from typing import Any

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import ER  # type: ignore[import-untyped]

from conch.backends.mysql.client import Connection
from conch.backends.mysql.lock import FENCING_TABLE
from conch.introspection import (
    BreakRefused,
    HolderChanged,
    HolderInfo,
    LockInfo,
    has_hold_to_break,
    read_stamp,
)

_SERVER_NAME = re.compile(r"conch:[0-9a-f]{58}")

# The holder (NULL: free), then its record when the row is its own.
_DESCRIBE = (f"SELECT IS_USED_LOCK(%(name)s), f.connection_id, f.token, f.acquired_at, f.holder"
             f" FROM (SELECT 1) AS one LEFT JOIN {FENCING_TABLE} AS f ON f.lock_key = %(name)s")
_LIST = (f"SELECT lock_key, connection_id, token, acquired_at, holder FROM {FENCING_TABLE}"
         " WHERE IS_USED_LOCK(lock_key) = connection_id")
# The statements of the connections waiting in GET_LOCK (they name the lock).
_WAITING = ("SELECT INFO FROM information_schema.PROCESSLIST"
            " WHERE STATE = 'User lock' AND INFO LIKE '%%GET_LOCK%%'")


def describe(session: Connection, server_name: str, key: bytes) -> tuple[LockInfo, int | None]:
    """Lock ``key`` (``GET_LOCK`` name ``server_name``) and its holder's connection id."""
    with session.cursor() as cursor:
        cursor.execute(_DESCRIBE, {"name": server_name})
        used, connection_id, token, acquired_at, stamp = cursor.fetchone()
        waiters = _waiters(cursor).get(server_name, 0)
    if used is None:
        return LockInfo(key, None, waiters), None
    if used != connection_id:  # held outside conch, or its record is not written yet
        return LockInfo(key, HolderInfo(session=str(used)), waiters), int(used)
    return LockInfo(key, _holder(used, token, acquired_at, stamp), waiters), int(used)


def held_locks(session: Connection) -> list[LockInfo]:
    """Every conch lock held on the server."""
    with session.cursor() as cursor:
        cursor.execute(_LIST)
        rows = cursor.fetchall()
        waiters = _waiters(cursor)
    found = []
    for server_name, connection_id, token, acquired_at, holder in rows:
        stamp = read_stamp(holder)
        if stamp is not None:
            found.append(LockInfo(stamp.key, _holder(connection_id, token, acquired_at, holder),
                                  waiters.get(server_name, 0)))
    return found


def break_hold(session: Connection, server_name: str, key: bytes, token: int | None) -> LockInfo:
    """Kill the connection holding lock ``key`` (only the hold with ``token``, if given)."""
    lock, connection_id = describe(session, server_name, key)
    if not has_hold_to_break(lock, token) or connection_id is None:
        return lock
    try:
        with session.cursor() as cursor:
            cursor.execute(f"KILL CONNECTION {int(connection_id)}")
    except pymysql.Error as exc:
        code = exc.args[0] if exc.args else None
        if code == ER.NO_SUCH_THREAD:
            raise HolderChanged(f"lock {lock.name!r} was released while being broken") from None
        if code in (ER.KILL_DENIED_ERROR, ER.SPECIFIC_ACCESS_DENIED_ERROR):
            raise BreakRefused(
                f"the server refused to kill the holder's connection {connection_id}: "
                f"{exc.args[1] if len(exc.args) > 1 else exc}; killing another user's "
                "connection needs the CONNECTION ADMIN or SUPER privilege") from None
        raise
    return lock


def _waiters(cursor: Any) -> collections.Counter[str]:
    cursor.execute(_WAITING)
    counted: collections.Counter[str] = collections.Counter()
    for (statement,) in cursor.fetchall():
        text = statement.decode("utf-8", "replace") if isinstance(statement, bytes) \
            else str(statement or "")
        counted.update(set(_SERVER_NAME.findall(text)))
    return counted


def _holder(connection_id: Any, token: Any, acquired_at: Any, holder: Any) -> HolderInfo:
    stamp = read_stamp(holder if isinstance(holder, (bytes, str)) else None)
    token = None if token is None else int(token)
    acquired_at = None if acquired_at is None else float(acquired_at)
    if stamp is None:
        return HolderInfo(token=token, acquired_at=acquired_at, session=str(connection_id))
    return stamp.holder(token=token, acquired_at=acquired_at, session=str(connection_id))
