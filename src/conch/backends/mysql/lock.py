"""The ``mysql://`` lock handle (a session of its own per hold, ``GET_LOCK`` waits server-side)
and the pool of sessions it draws from; tokens from table ``conch_fencing``. docs/mysql.md"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pymysql  # type: ignore[import-untyped]

from conch import metrics
from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.kit.errors import translated
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.pool import Pool
from conch.backends.kit.session import Heartbeat, Holds
from conch.backends.mysql import client
from conch.backends.mysql.client import Connection, Settings
from conch.errors import BackendUnavailable, LockLost, NotStarted
from conch.introspection import HolderStamp
from conch.url import BackendURL

IDLE_CONNECTIONS_KEPT = 8
FENCING_TABLE = "conch_fencing"

# Wait for the lock, then count the token up and record the holder: the INSERT's affected
# rows say whether it was taken, its OK packet carries the token. NOW(6): after the grant.
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


class MySQLSessions:
    """A coordinator's sessions, shared by its lock handles. Thread-safe."""

    def __init__(self, url: BackendURL, settings: Settings) -> None:
        self.url, self.settings = url, settings
        self.holds: Holds[MySQLLock]
        # The server ends a session idle for session_timeout: reuse one idle for half of it.
        # A forked child drops the parent's: PyMySQL says nothing to the server then.
        self._max_idle_age = settings.session_timeout / 2
        self.pool: Pool[Connection] = Pool(
            client.close_quietly, lambda connection: None, IDLE_CONNECTIONS_KEPT,
            lambda: NotStarted("the coordinator was stopped"),
            lambda connection, idle: idle < self._max_idle_age)
        self._checker: Heartbeat | None = None  # started by the first hold
        self.forget_parent()
        forget_in_child(self)

    @property
    def closed(self) -> bool:
        return self.pool.closed

    def forget_parent(self) -> None:
        """(Re)start empty; in a forked child, without closing the parent's sessions (its
        sockets are shared: a close would end the parent's session and free its locks)."""
        self.holds = Holds()
        self._checker = None
        self._mutex = threading.Lock()

    def translated_errors(self) -> AbstractContextManager[None]:
        """A block whose client errors leave it as :class:`conch.BackendUnavailable`."""
        return translated(self.url, client.CLIENT_ERRORS, lambda exc: f"mysql backend at "
                          f"{self.url.redacted()}: {client.describe(exc, self.settings)}")

    @contextlib.contextmanager
    def lent(self) -> Iterator[Connection]:
        """A session for a block that takes no lock, its errors translated (and the session
        closed after one)."""
        with self.translated_errors():
            connection = self.take()
            try:
                yield connection
            except BaseException:
                self.pool.give_back(connection, keep=False)
                raise
            self.pool.give_back(connection)

    def take(self) -> Connection:
        """A session for one handle: the most recently used idle one, else a new one."""
        return self.pool.idle_one() or self.pool.lend(client.open_connection(self.settings))

    @contextlib.contextmanager
    def waiting(self, connection: Connection) -> Iterator[None]:
        """A block where ``connection`` waits in the server (:meth:`close` kills the wait);
        :class:`NotStarted` once closed, checked after marking it: close kills the rest."""
        connection.conch_waiting = True
        try:
            if self.closed:
                raise NotStarted("the coordinator was stopped while waiting")
            yield
        finally:
            connection.conch_waiting = False

    def track(self, hold: MySQLLock, on_lost: LossCallback) -> None:
        """Check ``hold``'s session every ``check_interval`` until it is released or lost."""
        with self._mutex:
            if self._checker is None:
                self._checker = Heartbeat("conch-mysql-session", self.settings.check_interval,
                                          self._check_holds)
                self._checker.start()
        self.holds.add(hold, on_lost)

    def close(self) -> None:
        """End the waits (``KILL QUERY``: they raise :class:`NotStarted`), the holds and the
        idle sessions."""
        waiting = [c for c in self.pool.close() if getattr(c, "conch_waiting", False)]
        if self._checker is not None:
            self._checker.stop()
        if waiting:
            # A user may KILL its own sessions' queries without privilege. A server out of
            # reach is left alone: those waits end with their round.
            with contextlib.suppress(*client.CLIENT_ERRORS):
                killer = client.open_connection(self.settings)
                try:
                    with killer.cursor() as cursor:
                        for connection in waiting:
                            cursor.execute("KILL QUERY %s", (connection.thread_id(),))
                finally:
                    client.close_quietly(killer)
        for hold in self.holds.snapshot():
            hold.abandon("the coordinator was stopped")
        self.holds.lose_all("the coordinator was stopped")

    def _check_holds(self) -> None:
        # Idle sessions the server may soon end are closed rather than reused.
        self.pool.end_idle(older_than=self._max_idle_age)
        silent_server: str | None = None
        for hold in self.holds.snapshot():
            if silent_server is not None:  # give every hold up before the server frees it
                hold.abandon(silent_server)
                reason: str | None = silent_server
            else:
                try:
                    reason = hold.check()
                except Exception as exc:
                    reason = f"its session failed: {client.describe(exc, self.settings)}"
                    if client.timed_out(exc):
                        silent_server = reason
            if reason is not None:
                self.holds.lose(hold, reason)
            metrics.record_renewals("mysql", int(reason is None), int(reason is not None))


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
        with sessions.translated_errors():
            session = sessions.take()  # NotStarted once stopped
            for last_try in (False, True):
                try:
                    token = self._take_lock(session, deadline)
                    break
                except BaseException as exc:
                    # Ending the session frees whatever it took.
                    sessions.pool.give_back(session, keep=False)
                    if sessions.closed:  # its wait was interrupted by stop()
                        raise NotStarted("the coordinator was stopped while waiting") from None
                    if last_try or not client.session_gone(exc):
                        raise
                # The server ended the session (a restart, KILL) or stopped answering:
                # the idle ones are as stale. A fresh session gets one more try.
                sessions.pool.end_idle()
                session = sessions.pool.lend(client.open_connection(sessions.settings))
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
            reason = client.describe(exc, self._sessions.settings)
            if client.session_gone(exc):  # the server freed the lock when the session ended
                raise LockLost(f"its session ended before the release: {reason}") from None
            raise BackendUnavailable(reason) from None
        if not released:
            self._sessions.pool.give_back(session, keep=False)
            raise LockLost("the server no longer counted this session as the holder")
        self._sessions.pool.give_back(session)

    def check(self) -> str | None:
        """``None`` while the held session still holds the lock, else why not; raises (after
        closing the session) when the server does not answer."""
        with self._mutex:
            if (session := self._session) is None:
                return None  # released meanwhile
            try:
                with session.cursor() as cursor:
                    cursor.execute(_CHECK, (self._name,))
                    if cursor.fetchone()[0] == 1:
                        return None
            except BaseException as exc:
                self._lose_session(str(exc))
                raise
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

