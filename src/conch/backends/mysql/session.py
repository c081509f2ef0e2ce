"""The server sessions of one coordinator: idle connections for reuse (PyMySQL has no pool),
the waits in ``GET_LOCK`` (killed on stop) and the periodic check of the held ones. A lock
handle has a session to itself while it waits or holds: an idle one never holds a lock."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from conch import metrics
from conch.backends.base import LossCallback
from conch.backends.kit.errors import translated
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.pool import Pool
from conch.backends.kit.session import Heartbeat, Holds
from conch.backends.mysql import client
from conch.backends.mysql.client import Connection, Settings
from conch.errors import NotStarted
from conch.url import BackendURL

IDLE_CONNECTIONS_KEPT = 8


class CheckedHold(Protocol):
    """A hold whose session the check looks at."""

    def check(self) -> str | None:
        """``None`` while its session holds the lock, else why not (raises when the server
        does not answer; the session is closed then)."""

    def abandon(self, reason: str) -> None:
        """Close its session without asking the server."""


def close_quietly(connection: Connection) -> None:
    """Close ``connection``, ending its session (the server frees its locks). Never raises."""
    with contextlib.suppress(Exception):  # already closed or broken: nothing left to free
        connection.close()


class MySQLSessions:
    """A coordinator's sessions, shared by its lock handles. Thread-safe."""

    def __init__(self, url: BackendURL, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.holds: Holds[CheckedHold]
        # The server ends a session idle for session_timeout: reuse one idle for half of it.
        # A forked child drops the parent's: PyMySQL says nothing to the server then.
        self._max_idle_age = settings.session_timeout / 2
        self.pool: Pool[Connection] = Pool(
            close_quietly, lambda connection: None, IDLE_CONNECTIONS_KEPT,
            lambda: NotStarted("the coordinator was stopped"), max_idle_age=self._max_idle_age)
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

    def track(self, hold: CheckedHold, on_lost: LossCallback) -> None:
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
                    close_quietly(killer)
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
