"""``mysql://user:password@host:port/database``: MySQL / MariaDB user-level locks (``GET_LOCK``).

Translation of the contract:

* **hold**: ``GET_LOCK(name, timeout)`` in a server session (connection). The
  server frees the lock when that session ends, so a holder that dies frees its
  locks at once.
* **one session per hold**: ``GET_LOCK`` is re-entrant per session (MySQL 5.7+,
  MariaDB 10.0.2+): the session holding a name gets it again. So a lock handle
  takes a session from the coordinator's pool for itself when an acquire starts
  and gives it back only after ``RELEASE_LOCK``. An idle pooled session never
  holds a lock, and two handles (two holds, or a hold and a waiter) never share
  one: two lock objects of one process exclude each other as two processes do.
  Sessions are reused (no connect per acquire); up to 8 idle ones are kept.
* **names**: ``GET_LOCK`` names are server-wide, limited to 64 characters on
  MySQL and compared case-insensitively. The server name is ``conch:`` and 58 hex
  digits (232 bits) of SHA-256 over the database name, NUL and the lock name:
  never a truncated name, and scoped to the URL's database like the tokens.
* **waiting**: the server waits, in ``GET_LOCK`` rounds of at most a quarter of
  ``session_timeout`` (so every reply comes within the I/O timeout); a release
  wakes a waiter at once. MariaDB honours fractional timeouts (MDEV-4018); MySQL
  rounds them to whole seconds, so there a timed wait may end up to 0.5 s off.
* **fencing token**: in the round-trip that takes the lock (two statements), the
  name's row of table ``conch_fencing`` is upserted with ``token =
  LAST_INSERT_ID(token + 1)``, which the server returns in its OK packet. The
  table is created at connect if missing; InnoDB keeps it, so tokens keep
  increasing across client and server restarts (unless the row is deleted).
  ``GET_LOCK`` runs in a ``SET`` of its own rather than in the ``INSERT``'s
  ``WHERE``: a waiting ``INSERT`` would hold the table's metadata lock for the
  whole wait, and a statement-based binary log would replay ``GET_LOCK`` on
  replicas (it logs the ``INSERT`` with the variable's value instead).
* **session**: the server ends a session silent for ``session_timeout`` seconds
  (``wait_timeout``, default 10), freeing the locks of a holder cut off from it.
  The holder checks each held session every quarter of that with ``SELECT
  IS_USED_LOCK(name) = CONNECTION_ID()`` (which also keeps it from idling out);
  a failed or negative check reports the hold lost and closes the session. A
  check left unanswered for the I/O timeout (half of ``session_timeout``) means
  the server is unreachable: every hold is given up then, before the server can
  free them. A server restart ends the sessions: their holds are reported lost.
* **introspection** (``conch show``, ``conch break``): :mod:`conch.backends.mysql_inspection`.
* **fork**: a child shares its parent's sockets, so it forgets the parent's
  sessions without using or closing them (that would release or end the
  parent's locks) and opens its own.

Options: ``connect_timeout`` (seconds, default 5), ``session_timeout`` (above),
``ssl_ca`` / ``ssl_cert`` / ``ssl_key`` (TLS), ``unix_socket``; see docs/mysql.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import weakref
from collections.abc import Iterator

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import ER  # type: ignore[import-untyped]

from conch import metrics
from conch.backends import mysql_inspection
from conch.backends.base import Backend, Deadline, LockHandle, LossCallback
from conch.backends.mysql_connections import (
    Connection,
    ConnectionPool,
    Settings,
    close_quietly,
    describe,
    open_connection,
    session_gone,
    timed_out,
)
from conch.backends.session import Heartbeat, Holds
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, LockLost, NotStarted
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

SERVER_NAME_PREFIX = "conch:"
FENCING_TABLE = "conch_fencing"

# The holder columns (the last hold's stamp, connection and server time) serve
# `conch show` (mysql_inspection): written by the INSERT that counts the token up.
_HOLDER_COLUMNS = ("holder MEDIUMBLOB NULL", "connection_id BIGINT UNSIGNED NULL",
                   "acquired_at DECIMAL(17, 6) NULL")
_CREATE_FENCING_TABLE = f"""
CREATE TABLE IF NOT EXISTS {FENCING_TABLE} (
    lock_key CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    token BIGINT UNSIGNED NOT NULL,
    {", ".join(_HOLDER_COLUMNS)}
) ENGINE=InnoDB"""

# One round-trip: wait for the lock; if taken, count the token up and record the
# holder. The INSERT's affected rows say whether the lock was taken (0: timed out),
# and its OK packet carries the token set by LAST_INSERT_ID(expr). Params: name,
# wait (seconds), holder (the stamp). NOW(6) is the INSERT's start: after the grant.
_ACQUIRE = (
    "SET @conch_locked = GET_LOCK(%(name)s, %(wait)s);"
    f" INSERT INTO {FENCING_TABLE} (lock_key, token, holder, connection_id, acquired_at)"
    " SELECT %(name)s, LAST_INSERT_ID(1), %(holder)s, CONNECTION_ID(), UNIX_TIMESTAMP(NOW(6))"
    " FROM DUAL WHERE @conch_locked = 1"
    " ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1), holder = VALUES(holder),"
    " connection_id = VALUES(connection_id), acquired_at = VALUES(acquired_at)"
)
# 1 when released, 0 when another session holds it, NULL when nobody does.
_RELEASE = "SELECT RELEASE_LOCK(%s)"
# 1 while this session holds the lock.
_CHECK = "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()"


class MySQLBackend(Backend):
    """User-level locks of one MySQL or MariaDB server."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True,
        shared_locks=False, distributed=True, introspection=True, breakable=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        self.settings = Settings.from_url(url)
        self.pool = ConnectionPool(self.settings)
        self.holds: Holds[_MySQLLock] = Holds()
        self.closed = False
        self._name_scope = hashlib.sha256(self.settings.database.encode() + b"\0")
        self._checker: Heartbeat | None = None  # started by the first hold
        self._checker_mutex = threading.Lock()

    def connect(self) -> None:
        with self.translated_errors():
            session = self.pool.take()
            try:
                _ensure_fencing_table(session)
            except BaseException:
                close_quietly(session)
                raise
            self.pool.give_back(session)
        _open_backends.add(self)

    def close(self) -> None:
        self.closed = True
        _open_backends.discard(self)
        if self._checker is not None:
            self._checker.stop()
        for hold in self.holds.snapshot():
            hold.abandon("the coordinator was stopped")
        self.holds.lose_all("the coordinator was stopped")
        self.pool.close_all()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return _MySQLLock(self, self.server_name(key), HolderStamp(key, self.member_id), on_lost)

    def describe_lock(self, key: bytes) -> LockInfo:
        return mysql_inspection.inspecting(self, lambda session: mysql_inspection.describe(
            session, self.server_name(key), key)[0])

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return mysql_inspection.inspecting(self, mysql_inspection.held_locks)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        return mysql_inspection.inspecting(self, lambda session: mysql_inspection.break_hold(
            session, self.server_name(key), key, token))

    def server_name(self, key: bytes) -> str:
        """The ``GET_LOCK`` name of lock ``key``: 64 ASCII characters."""
        digest = self._name_scope.copy()
        digest.update(key)
        return SERVER_NAME_PREFIX + digest.hexdigest()[: 64 - len(SERVER_NAME_PREFIX)]

    @contextlib.contextmanager
    def translated_errors(self) -> Iterator[None]:
        """Turn PyMySQL's errors (and an unreadable TLS file) into :class:`BackendUnavailable`,
        without the password."""
        try:
            yield
        except (pymysql.Error, OSError) as exc:
            raise BackendUnavailable(
                f"mysql backend at {self.url.redacted()}: {describe(exc, self.settings)}"
            ) from None

    def track(self, hold: _MySQLLock, on_lost: LossCallback) -> None:
        """Keep checking ``hold``'s session until it is released or lost."""
        with self._checker_mutex:
            if self._checker is None:
                self._checker = Heartbeat("conch-mysql-session", self.settings.check_interval,
                                          self._check_holds)
                self._checker.start()
        self.holds.add(hold, on_lost)

    def _forget_parents_sessions(self) -> None:
        """In a forked child: the parent's sessions, holds and checker are not ours."""
        self._checker_mutex = threading.Lock()
        self._checker = None
        self.holds = Holds()
        self.pool.forget_all()

    def _check_holds(self) -> None:
        self.pool.close_stale()
        silent_server: str | None = None
        for hold in self.holds.snapshot():
            if silent_server is not None:
                hold.abandon(silent_server)
                reason: str | None = silent_server
            else:
                try:
                    reason = hold.check()
                except Exception as exc:  # the check closed the session: report it lost
                    reason = f"its session failed: {describe(exc, self.settings)}"
                    if timed_out(exc):
                        silent_server = reason
            if reason is not None:
                self.holds.lose(hold, reason)
            metrics.record_renewals("mysql", int(reason is None), int(reason is not None))


class _MySQLLock(LockHandle):
    def __init__(self, backend: MySQLBackend, name: str, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._backend = backend
        self._name = name
        self._stamp = stamp
        self._on_lost = on_lost
        # One user of the held session at a time: release() or the session check.
        self._mutex = threading.Lock()
        self._session: Connection | None = None
        self._session_pid = 0
        self._lost_reason: str | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        backend = self._backend
        if backend.closed:
            raise NotStarted("the coordinator was stopped")
        with backend.translated_errors():
            session = backend.pool.take()
            for last_try in (False, True):
                try:
                    token = self._take_lock(session, deadline)
                    break
                except BaseException as exc:
                    close_quietly(session)  # ends the session: frees whatever it took
                    if last_try or not session_gone(exc):
                        raise
                # The server ended the session (a restart, KILL) or stopped answering:
                # the idle ones are as stale. A fresh session gets one more try.
                backend.pool.close_all()
                session = open_connection(backend.settings)
        if token is None:
            backend.pool.give_back(session)
            return None
        with self._mutex:
            self._session, self._session_pid, self._lost_reason = session, os.getpid(), None
        backend.track(self, self._on_lost)
        if backend.closed:  # stopped while we waited: close() did not see this hold
            self.abandon("the coordinator was stopped")
            raise NotStarted("the coordinator was stopped")
        return token

    def release(self) -> None:
        self._backend.holds.discard(self)
        if self._session_pid != os.getpid():
            # A forked child holding its parent's lock object: the session (and the
            # socket) is the parent's, and releasing it would free the parent's lock.
            self._session = None
            return
        with self._mutex:
            session, self._session = self._session, None
            lost = self._lost_reason
        if session is None:
            if lost is not None:  # lost while release() was on its way: say so
                raise LockLost(f"the hold was lost before it was released: {lost}")
            return
        try:
            with session.cursor() as cursor:
                cursor.execute(_RELEASE, (self._name,))
                released = cursor.fetchone()[0] == 1
        except pymysql.Error as exc:
            close_quietly(session)
            reason = describe(exc, self._backend.settings)
            if session_gone(exc):  # the server freed the lock when the session ended
                raise LockLost(f"its session ended before the release: {reason}") from None
            raise BackendUnavailable(reason) from None
        except BaseException:
            close_quietly(session)
            raise
        if not released:
            close_quietly(session)
            raise LockLost("the server no longer counted this session as the holder")
        self._backend.pool.give_back(session)

    def check(self) -> str | None:
        """``None`` while the held session still holds the lock, else why not.

        Raises (after closing the session) when the server does not answer.
        """
        with self._mutex:
            session = self._session
            if session is None:
                return None  # released meanwhile
            try:
                with session.cursor() as cursor:
                    cursor.execute(_CHECK, (self._name,))
                    holds = cursor.fetchone()[0] == 1
            except BaseException as exc:
                self._lose_session(str(exc))
                raise
            if holds:
                return None
            reason = "the server no longer counts its session as the holder"
            self._lose_session(reason)
            return reason

    def abandon(self, reason: str) -> None:
        """Give up the hold without asking the server: close its session."""
        with self._mutex:
            self._lose_session(reason)

    def _lose_session(self, reason: str) -> None:
        session, self._session = self._session, None
        if session is not None:
            self._lost_reason = reason
            close_quietly(session)

    def _take_lock(self, session: Connection, deadline: Deadline) -> int | None:
        """Wait (server-side) for the lock in ``session``; its new token, or ``None``."""
        longest = self._backend.settings.longest_server_wait
        with session.cursor() as cursor:
            while True:
                remaining = deadline.remaining()
                wait = longest if remaining is None else min(remaining, longest)
                cursor.execute(_ACQUIRE, {"name": self._name, "wait": round(wait, 3),
                                          "holder": self._stamp.stamp()})
                cursor.nextset()
                if cursor.rowcount > 0:
                    return int(cursor.lastrowid)
                if wait == remaining:  # the server waited all the time that was left
                    return None
                if self._backend.closed:
                    raise NotStarted("the coordinator was stopped while waiting")


_open_backends: weakref.WeakSet[MySQLBackend] = weakref.WeakSet()


def _forget_parents_sessions_in_child() -> None:
    for backend in list(_open_backends):
        backend._forget_parents_sessions()


os.register_at_fork(after_in_child=_forget_parents_sessions_in_child)


def _ensure_fencing_table(session: Connection) -> None:
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
