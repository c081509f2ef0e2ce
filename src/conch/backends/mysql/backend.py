"""``mysql://user:password@host:port/database``: MySQL / MariaDB user-level locks
(``GET_LOCK``), fencing tokens from table ``conch_fencing``. Options and design: docs/mysql.md."""

from __future__ import annotations

import collections
import re
from typing import Any

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import ER  # type: ignore[import-untyped]

from conch import introspection
from conch.backends.base import Backend, GroupStore, LockHandle, LossCallback
from conch.backends.kit.errors import scrub
from conch.backends.kit.naming import hex_digest
from conch.backends.mysql.client import Connection, Settings
from conch.backends.mysql.groups import MySQLGroups
from conch.backends.mysql.lock import FENCING_TABLE, MySQLLock, MySQLSessions
from conch.backends.mysql.semaphore import CREATE_SEMAPHORES_TABLE, LIMITS, MySQLPermit
from conch.capabilities import Capabilities
from conch.errors import NotSupported
from conch.introspection import HolderInfo, HolderStamp, LockInfo
from conch.url import BackendURL

SERVER_NAME_PREFIX = "conch:"
_SERVER_NAME = re.compile(r"conch:[0-9a-f]{58}")

# The last hold's stamp, connection and server time, for `conch show`.
_HOLDER_COLUMNS = ("holder MEDIUMBLOB NULL", "connection_id BIGINT UNSIGNED NULL",
                   "acquired_at DECIMAL(17, 6) NULL")
_CREATE_FENCING_TABLE = f"""
CREATE TABLE IF NOT EXISTS {FENCING_TABLE} (
    lock_key CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    token BIGINT UNSIGNED NOT NULL,
    {", ".join(_HOLDER_COLUMNS)}
) ENGINE=InnoDB"""
# The holder (NULL: free), then its record when the row is its own.
_DESCRIBE = (f"SELECT IS_USED_LOCK(%(name)s), f.connection_id, f.token, f.acquired_at, f.holder"
             f" FROM (SELECT 1) AS one LEFT JOIN {FENCING_TABLE} AS f ON f.lock_key = %(name)s")
_LIST = (f"SELECT lock_key, connection_id, token, acquired_at, holder FROM {FENCING_TABLE}"
         " WHERE IS_USED_LOCK(lock_key) = connection_id")
# The statements of the connections waiting in GET_LOCK (they name the lock).
_WAITING = ("SELECT INFO FROM information_schema.PROCESSLIST"
            " WHERE STATE = 'User lock' AND INFO LIKE '%%GET_LOCK%%'")


class MySQLBackend(Backend):
    """User-level locks of one MySQL or MariaDB server."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True,
        shared_locks=False, distributed=True, introspection=True, breakable=True,
        groups=True, semaphores=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        self.settings = Settings.from_url(url)
        self.sessions = MySQLSessions(url, self.settings)
        self._groups: MySQLGroups | None = None  # made by the first groups()
        self._semaphores_table = False  # made by the first semaphore_handle()

    def connect(self) -> None:
        with self.sessions.lent() as session:
            ensure_fencing_table(session)

    def close(self) -> None:
        if self._groups is not None:
            self._groups.close()
        self.sessions.close()

    def groups(self) -> GroupStore:
        self._groups = MySQLGroups(self.settings, self.member_id, lambda problem: scrub(
            f"mysql backend at {self.url.redacted()}: {problem}", self.url))
        return self._groups

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return MySQLLock(self.sessions, self.server_name(key), HolderStamp(key, self.member_id),
                         on_lost)

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        if limit not in LIMITS:
            raise NotSupported(f"mysql semaphores take limits up to {LIMITS[-1]}, not {limit}")
        if not self._semaphores_table:  # created when first needed: locks need no CREATE
            with self.sessions.lent() as session, session.cursor() as cursor:
                cursor.execute(CREATE_SEMAPHORES_TABLE)
            self._semaphores_table = True
        return MySQLPermit(self.sessions, self._scoped(key), limit,
                           HolderStamp(key, self.member_id), on_lost)

    def describe_lock(self, key: bytes) -> LockInfo:
        with self.sessions.lent() as session, session.cursor() as cursor:
            return self._holder_of(cursor, key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        with self.sessions.lent() as session, session.cursor() as cursor:
            cursor.execute(_LIST)
            rows = cursor.fetchall()
            waiters = _waiters(cursor)
        return [LockInfo(stamp.key, _holder(connection_id, token, acquired_at, holder),
                         waiters.get(server_name, 0))
                for server_name, connection_id, token, acquired_at, holder in rows
                if (stamp := introspection.read_stamp(holder)) is not None]

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        """Kill the connection holding lock ``key`` (only the hold with ``token``, if given)."""
        with self.sessions.lent() as session, session.cursor() as cursor:
            lock, connection_id = self._holder_of(cursor, key)
            if not introspection.has_hold_to_break(lock, token) or connection_id is None:
                return lock
            try:
                cursor.execute(f"KILL CONNECTION {int(connection_id)}")
            except pymysql.Error as exc:
                code = exc.args[0] if exc.args else None
                if code == ER.NO_SUCH_THREAD:
                    raise introspection.HolderChanged(
                        f"lock {key!r} was released while being broken") from None
                if code in (ER.KILL_DENIED_ERROR, ER.SPECIFIC_ACCESS_DENIED_ERROR):
                    raise introspection.BreakRefused(
                        f"the server refused to kill the holder's connection {connection_id}: "
                        f"{exc.args[1] if len(exc.args) > 1 else exc}; killing another user's "
                        "connection needs the CONNECTION ADMIN or SUPER privilege") from None
                raise
            return lock

    def server_name(self, key: bytes) -> str:
        """The ``GET_LOCK`` name of lock ``key``: ``conch:`` and 58 hex digits of SHA-256 over
        the database name, NUL and the key (names are server-wide, at most 64 characters)."""
        return SERVER_NAME_PREFIX + hex_digest(self._scoped(key), 64 - len(SERVER_NAME_PREFIX))

    def _scoped(self, key: bytes) -> bytes:
        return self.settings.database.encode() + b"\0" + key

    def _holder_of(self, cursor: Any, key: bytes) -> tuple[LockInfo, int | None]:
        """Lock ``key`` and its holder's connection id."""
        server_name = self.server_name(key)
        cursor.execute(_DESCRIBE, {"name": server_name})
        used, connection_id, token, acquired_at, stamp = cursor.fetchone()
        waiters = _waiters(cursor).get(server_name, 0)
        if used is None:
            return LockInfo(key, None, waiters), None
        if used != connection_id:  # held outside conch, or its record is not written yet
            return LockInfo(key, HolderInfo(session=str(used)), waiters), int(used)
        return LockInfo(key, _holder(used, token, acquired_at, stamp), waiters), int(used)


def _waiters(cursor: Any) -> collections.Counter[str]:
    cursor.execute(_WAITING)
    counted: collections.Counter[str] = collections.Counter()
    for (statement,) in cursor.fetchall():
        text = statement.decode("utf-8", "replace") if isinstance(statement, bytes) \
            else str(statement or "")
        counted.update(set(_SERVER_NAME.findall(text)))
    return counted


def _holder(connection_id: Any, token: Any, acquired_at: Any, holder: Any) -> HolderInfo:
    stamp = introspection.read_stamp(holder if isinstance(holder, (bytes, str)) else None)
    token = None if token is None else int(token)
    acquired_at = None if acquired_at is None else float(acquired_at)
    if stamp is None:
        return HolderInfo(token=token, acquired_at=acquired_at, session=str(connection_id))
    return stamp.holder(token=token, acquired_at=acquired_at, session=str(connection_id))


def ensure_fencing_table(session: Connection) -> None:
    """Create ``conch_fencing`` unless it exists (so a user without CREATE can use it),
    and add the holder columns to a table made before they existed."""
    with session.cursor() as cursor:
        try:
            cursor.execute(f"SELECT holder, connection_id, acquired_at FROM {FENCING_TABLE} "
                           "LIMIT 0")
        except (pymysql.ProgrammingError, pymysql.OperationalError) as exc:
            if exc.args[0] == ER.NO_SUCH_TABLE:
                cursor.execute(_CREATE_FENCING_TABLE)
            elif exc.args[0] == ER.BAD_FIELD_ERROR:
                columns = ", ".join(f"ADD COLUMN {column}" for column in _HOLDER_COLUMNS)
                cursor.execute(f"ALTER TABLE {FENCING_TABLE} {columns}")
            else:
                raise
