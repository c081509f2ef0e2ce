"""One ``mysql://`` lock handle: the server session it takes for its hold, and the
statements it sends there.

``GET_LOCK`` is re-entrant per session, so a handle takes a session from its
backend's pool for itself when an acquire starts, waits in it (server-side, in
rounds of :attr:`~conch.backends.mysql.session.Settings.longest_server_wait`),
and gives it back only after ``RELEASE_LOCK``. While held, the backend's session
check calls :meth:`MySQLLock.check`; a failed check, or giving the hold up,
closes the session, which frees the lock on the server. See :mod:`conch.backends.mysql.backend`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pymysql  # type: ignore[import-untyped]

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.mysql.fencing import ACQUIRE
from conch.backends.mysql.session import (
    Connection,
    Settings,
    close_quietly,
    describe,
    open_connection,
    session_gone,
)
from conch.errors import BackendUnavailable, LockLost, NotStarted
from conch.introspection import HolderStamp

if TYPE_CHECKING:
    from conch.backends.mysql.backend import MySQLBackend

# 1 when released, 0 when another session holds it, NULL when nobody does.
_RELEASE = "SELECT RELEASE_LOCK(%s)"
# 1 while this session holds the lock.
_CHECK = "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()"


class ServerWaits:
    """The sessions waiting in ``GET_LOCK`` now, so that stopping the coordinator can end
    their waits at once (``KILL QUERY``) instead of at the end of the current round."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._sessions: set[Connection] = set()

    @contextlib.contextmanager
    def waiting(self, session: Connection) -> Iterator[None]:
        """``session`` waits in the server while the block runs."""
        with self._mutex:
            self._sessions.add(session)
        try:
            yield
        finally:
            with self._mutex:
                self._sessions.discard(session)

    def interrupt_all(self, settings: Settings) -> None:
        """End every wait in progress: the waiting acquires see the stop and raise
        :class:`NotStarted`. A server that cannot be reached is left alone (those waits
        end with their round anyway)."""
        with self._mutex:
            sessions = list(self._sessions)
        if not sessions:
            return
        with contextlib.suppress(pymysql.Error, OSError):
            # A user may KILL its own sessions' queries without any privilege.
            killer = open_connection(settings)
            try:
                with killer.cursor() as cursor:
                    for session in sessions:
                        cursor.execute("KILL QUERY %s", (session.thread_id(),))
            finally:
                close_quietly(killer)

    def forget_all(self) -> None:
        """In a forked child: the parent's waits are not ours."""
        self._mutex = threading.Lock()
        self._sessions = set()


class MySQLLock(LockHandle):
    """A handle on one lock name (``GET_LOCK`` name ``name``) of ``backend``."""

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
                    if backend.closed:  # its wait was interrupted by stop()
                        raise NotStarted("the coordinator was stopped while waiting") from None
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
                with self._backend.waits.waiting(session):
                    if self._backend.closed:  # checked after joining: stop() kills the rest
                        raise NotStarted("the coordinator was stopped while waiting")
                    cursor.execute(ACQUIRE, {"name": self._name, "wait": round(wait, 3),
                                              "holder": self._stamp.stamp()})
                    cursor.nextset()
                if cursor.rowcount > 0:
                    return int(cursor.lastrowid)
                if wait == remaining:  # the server waited all the time that was left
                    return None
