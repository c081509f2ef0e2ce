"""``postgresql://user[:password]@host[:port]/dbname[?options]``: PostgreSQL advisory locks.

Translation of the contract:

* **name → key**: the first 8 bytes of the name's SHA-256 as a signed ``bigint``
  (:func:`advisory_key`). All 64 bits count: a million names share a key with
  probability about 3e-8 (tooz keeps 16 bits of MD5, so 1 in 65,536 pairs of names
  silently share a lock).
* **hold**: a *session-level* advisory lock on that key. The server frees it when
  the session ends, so a killed holder's locks go as soon as its TCP connection
  closes (``session_bound``); the connection also asks the server to send TCP
  keepalives, so a vanished client host is noticed in about 25 s.
* **one session per hold**: advisory locks are re-entrant *within a session*, so
  two lock objects sharing a session would both "hold" one name. Each acquire
  therefore borrows a session of its own from the coordinator's pool and keeps it
  while it holds; release unlocks and returns it. A pooled (idle) session holds no
  advisory lock at all: a session whose unlock did not succeed is closed, never
  pooled. So two holds of one name are always two server sessions, and the server
  excludes them whether they come from one process or two. A lock costs no new
  connection once the pool is warm (``pool_size`` idle sessions are kept; more are
  opened while more locks are held or awaited at once: each uses one server
  connection, mind ``max_connections``).
* **acquire**: one round-trip takes the lock and draws the fencing token.
  ``blocking=False`` (or an expired deadline) uses ``pg_try_advisory_lock``;
  ``blocking=True`` waits in ``pg_advisory_lock``, in the server; a timed wait
  tries first, then waits with ``lock_timeout`` set to the time left, and an
  expired ``lock_timeout`` (SQLSTATE 55P03) cancels only the statement: the
  session stays usable and nothing is held. No client-side polling anywhere.
  A session-level lock survives the rollback of the statement that took it, so a
  session whose acquire failed half-way is closed rather than reused.
* **fencing token**: ``nextval`` of one sequence, ``conch_fencing_token`` (created
  on first connect when missing), drawn after the lock is granted. Holders of a
  name follow each other, so each draws a larger value than the last; sequences
  are never rolled back and survive restarts, so tokens keep increasing across
  holder and server restarts. Tokens are shared by all names and have gaps.
* **session**: a :class:`~conch.backends.kit.session.Heartbeat` checks every
  ``heartbeat`` seconds that the server still lists each held lock as granted to
  its session (``pg_locks``). A failed connection (server restart, network), a
  lock no longer listed, or no answer within ``connect_timeout`` marks the hold
  lost; a hold whose session fails at release raises there.
* **where**: the blocking handle and its hold are :mod:`conch.backends.postgresql.lock`;
  the sessions and their pool :mod:`conch.backends.postgresql.session`; the statements
  :mod:`conch.backends.postgresql.protocol`, over :mod:`conch.backends.postgresql.wire`.
* **asyncio** (``native_async``): the same holds, sessions and statements, waited for
  on the event loop: :mod:`conch.backends.postgresql.async_lock`.
* **introspection** (``conch show``, ``conch break``): :mod:`conch.backends.postgresql.inspection`.
* **errors**: libpq's messages, with the URL's secrets removed. The server's
  deadlock detector never fires: a session holds at most one lock and a waiting
  session holds none, so a cycle of threads waiting on each other's locks is not
  a cycle of sessions (as with every other backend, it simply waits).

Not FIFO: PostgreSQL's lock manager queues waiters roughly in arrival order, but
its documentation promises no order, and the deadlock detector may reorder a queue.
Do not use through a transaction-pooling proxy (PgBouncer ``pool_mode=transaction``):
session-level locks need the session.

Options: ``connect_timeout`` (seconds, default 5: to connect, and the longest wait
for any answer but a lock grant), ``heartbeat`` (seconds, default 2), ``pool_size``
(idle sessions kept, default 4), and libpq's ``sslmode``, ``sslrootcert``,
``sslcert``, ``sslkey``.
"""

from __future__ import annotations

import os
import urllib.parse
import weakref

from psycopg.conninfo import make_conninfo

from conch import metrics
from conch.backends.base import AsyncLockHandle, Backend, LockHandle, LossCallback
from conch.backends.kit.session import Heartbeat, Holds
from conch.backends.postgresql import inspection
from conch.backends.postgresql.async_lock import AsyncSessions
from conch.backends.postgresql.lock import AdvisoryLock, Hold
from conch.backends.postgresql.protocol import (
    CREATE_NAMES_TABLE,
    FENCING_SEQUENCE,
    NAMES_TABLE,
    advisory_key,
    cannot_connect,
)
from conch.backends.postgresql.session import Session, SessionPool
from conch.backends.postgresql.wire import SessionBroken, StatementFailed
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, InvalidURL
from conch.introspection import LockInfo
from conch.url import BackendURL

_LIBPQ_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
# A role's statement_timeout would cancel a wait meant to last; lock_timeout is set
# per wait. The keepalives let the server notice a vanished client host (10 s + 3 x 5 s).
_SESSION_SETTINGS = ("-c statement_timeout=0 -c lock_timeout=0 -c tcp_keepalives_idle=10"
                     " -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3")
_DUPLICATE_OBJECT = ("23505", "42P07")  # two clients created the sequence at once
_NAMED_KEYS_KEPT = 100_000

_open_backends: weakref.WeakSet[PostgreSQLBackend] = weakref.WeakSet()


class PostgreSQLBackend(Backend):
    """Session-level advisory locks in one PostgreSQL database."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True,
        shared_locks=False, distributed=True, introspection=True, breakable=True,
        native_async=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        options = url.options({"connect_timeout", "heartbeat", "pool_size", *_LIBPQ_OPTIONS})
        if len(url.hosts) != 1 or not url.hosts[0][0]:
            raise InvalidURL(f"postgresql:// URLs take exactly one host[:port]: {url}")
        if url.path.count("/") > 1:
            raise InvalidURL(f"postgresql:// URLs take one database name as the path: {url}")
        self.connect_timeout = url.float_option("connect_timeout", 5.0)
        self.heartbeat_interval = url.float_option("heartbeat", 2.0)
        host, port = url.hosts[0]
        self._conninfo = make_conninfo(
            # A percent-encoded host is a Unix socket directory, as in libpq's own URIs.
            "", host=urllib.parse.unquote(host), port=port or 5432,
            dbname=url.path.lstrip("/") or None, user=url.username, password=url.password,
            application_name=f"conch {member_id}"[:63], options=_SESSION_SETTINGS,
            **{name: options[name] for name in _LIBPQ_OPTIONS if name in options},
        ).encode()
        self.pool = SessionPool(self._open_session, _pool_size(url))
        self.async_sessions = AsyncSessions(self, self._conninfo, _pool_size(url))
        self.holds: Holds[Hold] = Holds()
        self.named_keys: set[int] = set()
        """Keys whose name this process recorded (conch_lock_names): not sent again."""
        self._heartbeat = Heartbeat(f"conch-postgresql {member_id}", self.heartbeat_interval,
                                    self._check_holds)

    def connect(self) -> None:
        session = self._open_session(prepare=False)
        try:
            for name, create in (
                (FENCING_SEQUENCE, f"CREATE SEQUENCE IF NOT EXISTS {FENCING_SEQUENCE} AS bigint"),
                (NAMES_TABLE, CREATE_NAMES_TABLE),
            ):
                if session.execute(f"SELECT to_regclass('{name}')") is None:
                    try:
                        session.execute(create)
                    except StatementFailed as exc:
                        if exc.sqlstate not in _DUPLICATE_OBJECT:
                            raise
            session.prepare()
        except StatementFailed as exc:
            session.close()
            raise BackendUnavailable(self.describe(
                f"cannot set up the fencing sequence {FENCING_SEQUENCE} and the lock names "
                f"table {NAMES_TABLE} ({exc}); create them once with CREATE SEQUENCE and "
                "CREATE TABLE (docs/postgresql.md), then grant USAGE on the sequence and "
                "SELECT, INSERT on the table")) from None
        except SessionBroken as exc:
            raise self.unavailable(exc) from None
        self.pool.give_back(session)
        self._heartbeat.start()
        _open_backends.add(self)

    def close(self) -> None:
        _open_backends.discard(self)
        self._heartbeat.stop()
        self.pool.close()
        self.async_sessions.close()
        self.holds.lose_all("the coordinator was stopped")

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return AdvisoryLock(self, advisory_key(key), key, on_lost)

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        return self.async_sessions.handle(advisory_key(key), key, on_lost)

    async def close_async(self) -> None:
        await self.async_sessions.close_async()

    def describe_lock(self, key: bytes) -> LockInfo:
        return inspection.inspecting(self, lambda session: inspection.describe(
            session, advisory_key(key), key))

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return inspection.inspecting(self, inspection.held_locks)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        return inspection.inspecting(self, lambda session: inspection.break_hold(
            session, advisory_key(key), key, token))

    def describe(self, problem: object) -> str:
        """``problem`` prefixed with the redacted URL, with every secret removed."""
        text = " ".join(f"PostgreSQL at {self.url.redacted()}: {problem}".split())
        for secret in self.url.secrets:
            text = text.replace(secret, "***")
        return text

    def unavailable(self, exc: Exception) -> BackendUnavailable:
        """``exc`` (a failed connection or statement) as a conch error."""
        return BackendUnavailable(self.describe(exc))

    def name_recorded(self, key: int) -> None:
        """Remember that ``key``'s name is recorded (forgetting all past a bound: a
        name recorded twice costs only a skipped insert)."""
        if len(self.named_keys) >= _NAMED_KEYS_KEPT:
            self.named_keys.clear()
        self.named_keys.add(key)

    def _open_session(self, prepare: bool = True) -> Session:
        try:
            session = Session(self._conninfo, self.connect_timeout)
            if prepare:
                session.prepare()
        except (SessionBroken, StatementFailed) as exc:
            raise cannot_connect(self.describe, exc) from None
        return session

    def _check_holds(self) -> None:
        for hold in self.holds.snapshot():
            reason = hold.verify()
            if reason is not None:
                self.pool.discard(hold.session)
                self.holds.lose(hold, reason)
                metrics.record_renewals("postgresql", 0, 1)
            else:
                metrics.record_renewals("postgresql", 1)
        self.async_sessions.check_holds()


def _pool_size(url: BackendURL) -> int:
    raw = url.query.get("pool_size", "4")
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidURL(f"option pool_size must be a whole number >= 1, got {raw!r}")
    return int(raw)


def _disown_all_in_child() -> None:
    # A forked child shares its parent's sockets: using (or even closing) them
    # would break the parent's sessions and the locks they hold.
    for backend in list(_open_backends):
        backend.pool.disown_all()
        backend.async_sessions.disown_all()


os.register_at_fork(after_in_child=_disown_all_in_child)
