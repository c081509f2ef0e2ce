"""One ``mysql://`` lock handle: it takes a session of its own (``GET_LOCK`` is re-entrant per
session), waits there server-side, and gives the session back only after ``RELEASE_LOCK``;
while held, :class:`~conch.backends.mysql.session.MySQLSessions` checks it."""

from __future__ import annotations

import os
import threading

import pymysql  # type: ignore[import-untyped]

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.mysql.client import Connection, open_connection
from conch.backends.mysql.errors import describe, session_gone
from conch.backends.mysql.fencing import ACQUIRE
from conch.backends.mysql.session import MySQLSessions
from conch.errors import BackendUnavailable, LockLost, NotStarted
from conch.introspection import HolderStamp

# 1 when released, 0 when another session holds it, NULL when nobody does.
_RELEASE = "SELECT RELEASE_LOCK(%s)"
# 1 while this session holds the lock.
_CHECK = "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()"


class MySQLLock(LockHandle):
    """A handle on one lock name (``GET_LOCK`` name ``name``)."""

    def __init__(self, sessions: MySQLSessions, name: str, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._sessions = sessions
        self._name = name
        self._stamp = stamp
        self._on_lost = on_lost
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
                self._sessions.begin_wait(session)
                try:
                    cursor.execute(ACQUIRE, {"name": self._name, "wait": round(wait, 3),
                                             "holder": self._stamp.stamp()})
                    cursor.nextset()
                finally:
                    self._sessions.end_wait(session)
                if cursor.rowcount > 0:
                    return int(cursor.lastrowid)
                if wait == remaining:  # the server waited all the time that was left
                    return None
