"""``mysql://user:password@host:port/database``: MySQL / MariaDB user-level locks (``GET_LOCK``).

This module is the backend: the coordinator's session pool, the check of held
sessions, names, introspection and fork. One hold's session and statements are
:mod:`conch.backends.mysql.lock`; the fencing table, :mod:`conch.backends.mysql.fencing`;
connections, :mod:`conch.backends.mysql.session`.

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
* **introspection** (``conch show``, ``conch break``): :mod:`conch.backends.mysql.inspection`.
* **fork**: a child shares its parent's sockets, so it forgets the parent's
  sessions without using or closing them (that would release or end the
  parent's locks) and opens its own.

Options: ``connect_timeout`` (seconds, default 5), ``session_timeout`` (above),
``ssl_*`` (TLS: :data:`conch.backends.kit.tls.SSL_URL_OPTIONS`), ``unix_socket``; see docs/mysql.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import weakref
from collections.abc import Iterator

import pymysql  # type: ignore[import-untyped]

from conch import metrics
from conch.backends.base import Backend, LockHandle, LossCallback
from conch.backends.kit.session import Heartbeat, Holds
from conch.backends.kit.tls import TLSFileError
from conch.backends.mysql import inspection
from conch.backends.mysql.fencing import FENCING_TABLE as FENCING_TABLE
from conch.backends.mysql.fencing import ensure_fencing_table
from conch.backends.mysql.lock import MySQLLock, ServerWaits
from conch.backends.mysql.session import (
    ConnectionPool,
    Settings,
    close_quietly,
    describe,
    timed_out,
)
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

SERVER_NAME_PREFIX = "conch:"


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
        self.holds: Holds[MySQLLock] = Holds()
        self.waits = ServerWaits()
        self.closed = False
        self._name_scope = hashlib.sha256(self.settings.database.encode() + b"\0")
        self._checker: Heartbeat | None = None  # started by the first hold
        self._checker_mutex = threading.Lock()

    def connect(self) -> None:
        with self.translated_errors():
            session = self.pool.take()
            try:
                ensure_fencing_table(session)
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
        self.waits.interrupt_all(self.settings)
        for hold in self.holds.snapshot():
            hold.abandon("the coordinator was stopped")
        self.holds.lose_all("the coordinator was stopped")
        self.pool.close_all()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return MySQLLock(self, self.server_name(key), HolderStamp(key, self.member_id), on_lost)

    def describe_lock(self, key: bytes) -> LockInfo:
        return inspection.inspecting(self, lambda session: inspection.describe(
            session, self.server_name(key), key)[0])

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return inspection.inspecting(self, inspection.held_locks)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        return inspection.inspecting(self, lambda session: inspection.break_hold(
            session, self.server_name(key), key, token))

    def server_name(self, key: bytes) -> str:
        """The ``GET_LOCK`` name of lock ``key``: 64 ASCII characters."""
        digest = self._name_scope.copy()
        digest.update(key)
        return SERVER_NAME_PREFIX + digest.hexdigest()[: 64 - len(SERVER_NAME_PREFIX)]

    @contextlib.contextmanager
    def translated_errors(self) -> Iterator[None]:
        """Turn PyMySQL's errors (and an unusable TLS file) into :class:`BackendUnavailable`,
        without the password."""
        try:
            yield
        except (pymysql.Error, OSError, TLSFileError) as exc:
            raise BackendUnavailable(
                f"mysql backend at {self.url.redacted()}: {describe(exc, self.settings)}"
            ) from None

    def track(self, hold: MySQLLock, on_lost: LossCallback) -> None:
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
        self.waits.forget_all()
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


_open_backends: weakref.WeakSet[MySQLBackend] = weakref.WeakSet()


def _forget_parents_sessions_in_child() -> None:
    for backend in list(_open_backends):
        backend._forget_parents_sessions()


os.register_at_fork(after_in_child=_forget_parents_sessions_in_child)
