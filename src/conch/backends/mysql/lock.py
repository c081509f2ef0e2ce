"""One ``mysql://`` lock handle: it takes a session of its own (``GET_LOCK`` is re-entrant per
session), waits there server-side, and gives the session back only after ``RELEASE_LOCK``;
while held, :class:`~conch.backends.mysql.session.MySQLSessions` checks it. Its token comes
from table ``conch_fencing`` (a row per ``GET_LOCK`` name: the last token and holder)."""

from __future__ import annotations

import os
import threading

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import ER  # type: ignore[import-untyped]

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.mysql.client import Connection, describe, open_connection, session_gone
from conch.backends.mysql.session import MySQLSessions
from conch.errors import BackendUnavailable, LockLost, NotStarted
from conch.introspection import HolderStamp

FENCING_TABLE = "conch_fencing"

# The last hold's stamp, connection and server time, for `conch show` (mysql.inspection).
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
ACQUIRE = (
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


class MySQLLock(LockHandle):
    """A handle on one lock name (``GET_LOCK`` name ``name``)."""

    def __init__(self, sessions: MySQLSessions, name: str, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._sessions, self._name, self._stamp, self._on_lost = sessions, name, stamp, on_lost
        self._mutex = threading.Lock()  # one user of the held session: release() or the check
        self._session: Connection | None = None
        self._session_pid = 0
        self._lost_reason: str | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        sessions = self._sessions
        if sessions.closed:
            raise NotStarted("the coordinator was stopped")
        with sessions.translated_errors():
            session = sessions.take()
            for last_try in (False, True):
                try:
                    token = self._take_lock(session, deadline)
                    break
                except BaseException as exc:
                    # Ending the session frees whatever it took.
                    sessions.pool.give_back(session, keep=False)
                    if sessions.closed:  # its wait was interrupted by stop()
                        raise NotStarted("the coordinator was stopped while waiting") from None
                    if last_try or not session_gone(exc):
                        raise
                # The server ended the session (a restart, KILL) or stopped answering:
                # the idle ones are as stale. A fresh session gets one more try.
                sessions.pool.end_idle()
                session = sessions.pool.lend(open_connection(sessions.settings))
        if token is None:
            sessions.pool.give_back(session)
            return None
        with self._mutex:
            self._session, self._session_pid, self._lost_reason = session, os.getpid(), None
        sessions.track(self, self._on_lost)
        if sessions.closed:  # stopped while we waited: close() did not see this hold
            self.abandon("the coordinator was stopped")
            raise NotStarted("the coordinator was stopped")
        return token

    def release(self) -> None:
        self._sessions.holds.discard(self)
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
        except BaseException as exc:
            self._sessions.pool.give_back(session, keep=False)
            if not isinstance(exc, pymysql.Error):
                raise
            reason = describe(exc, self._sessions.settings)
            if session_gone(exc):  # the server freed the lock when the session ended
                raise LockLost(f"its session ended before the release: {reason}") from None
            raise BackendUnavailable(reason) from None
        if not released:
            self._sessions.pool.give_back(session, keep=False)
            raise LockLost("the server no longer counted this session as the holder")
        self._sessions.pool.give_back(session)

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
            self._sessions.pool.give_back(session, keep=False)

    def _take_lock(self, session: Connection, deadline: Deadline) -> int | None:
        """Wait (server-side, in rounds whose reply comes within the I/O timeout) for the
        lock in ``session``; its new token, or ``None``."""
        longest = self._sessions.settings.check_interval
        with session.cursor() as cursor:
            while True:
                remaining = deadline.remaining()
                wait = longest if remaining is None else min(remaining, longest)
                with self._sessions.waiting(session):
                    cursor.execute(ACQUIRE, {"name": self._name, "wait": round(wait, 3),
                                             "holder": self._stamp.stamp()})
                    cursor.nextset()
                if cursor.rowcount > 0:
                    return int(cursor.lastrowid)
                if wait == remaining:  # the server waited all the time that was left
                    return None


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
