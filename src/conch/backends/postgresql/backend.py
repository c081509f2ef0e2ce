"""``postgresql://user[:password]@host[:port]/dbname[?options]``: session-level advisory locks,
fencing tokens from one sequence. Options and design: docs/postgresql.md."""

from __future__ import annotations

import math
import urllib.parse
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from conch.backends.base import AsyncLockHandle, Backend, GroupStore, LockHandle, LossCallback
from conch.backends.kit.errors import scrub
from conch.backends.kit.naming import int64_key
from conch.backends.kit.session import Heartbeat
from conch.backends.postgresql import lock
from conch.backends.postgresql.groups import PostgreSQLGroups
from conch.backends.postgresql.semaphore import LIMITS, SemaphorePermit
from conch.backends.postgresql.session import create_missing
from conch.backends.postgresql.statements import HELD, SETUP, TERMINATE
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, InvalidURL, NotSupported
from conch.introspection import BreakRefused, HolderChanged, HolderInfo, LockInfo
from conch.url import BackendURL

_LIBPQ_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
# A role's statement_timeout would cut a wait meant to last (lock_timeout is set per wait);
# the keepalives let the server notice a vanished client host (10 s + 3 x 5 s).
_SESSION_SETTINGS = ("-c statement_timeout=0 -c lock_timeout=0 -c tcp_keepalives_idle=10"
                     " -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3")
APPLICATION_PREFIX = "conch "

class PostgreSQLBackend(Backend):
    """Session-level advisory locks in one PostgreSQL database."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True,
        shared_locks=True, distributed=True, introspection=True, breakable=True,
        native_async=True, groups=True, semaphores=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        options = url.options({"connect_timeout", "heartbeat", "pool_size", *_LIBPQ_OPTIONS})
        if len(url.hosts) != 1 or not url.hosts[0][0]:
            raise InvalidURL(f"postgresql:// URLs take exactly one host[:port]: {url}")
        if url.path.count("/") > 1:
            raise InvalidURL(f"postgresql:// URLs take one database name as the path: {url}")
        self.connect_timeout = url.float_option("connect_timeout", 5.0)
        pool_size = options.get("pool_size", "4")
        if not pool_size.isdigit() or int(pool_size) < 1:
            raise InvalidURL(f"option pool_size must be a whole number >= 1, got {pool_size!r}")
        host, port = url.hosts[0]
        conninfo = make_conninfo(
            # A percent-encoded host is a Unix socket directory, as in libpq's own URIs.
            "", host=urllib.parse.unquote(host), port=port or 5432,
            dbname=url.path.lstrip("/") or None, user=url.username, password=url.password,
            application_name=f"{APPLICATION_PREFIX}{member_id}"[:63], options=_SESSION_SETTINGS,
            connect_timeout=max(1, math.ceil(self.connect_timeout)),
            **{name: options[name] for name in _LIBPQ_OPTIONS if name in options},
        )
        pool = (self.describe, conninfo, self.connect_timeout, int(pool_size))
        self.sessions, self.async_sessions = lock.Sessions(*pool), lock.AsyncSessions(*pool)
        heartbeat = url.float_option("heartbeat", 2.0)
        self._heartbeat = Heartbeat(f"conch-postgresql {member_id}", heartbeat, self._check_holds)
        self._groups = PostgreSQLGroups(self.sessions.open, member_id, heartbeat,
                                        self.connect_timeout, self.describe)

    def connect(self) -> None:
        session = self.sessions.open()
        try:
            create_missing(session, SETUP)
        except psycopg.Error as exc:
            session.close()
            raise BackendUnavailable(self.describe(
                f"cannot set up the fencing sequence and the lock names table ({exc}): create "
                f"{' and '.join(SETUP)} once with CREATE SEQUENCE and CREATE TABLE "
                "(docs/postgresql.md), then grant USAGE on the sequence, SELECT, INSERT on the "
                "table")) from None
        self.sessions.pool.give_back(session)
        self._heartbeat.start()

    def close(self) -> None:
        self._groups.close()
        self._heartbeat.stop()
        self.sessions.close()
        self.async_sessions.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return lock.AdvisoryLock(self.sessions, int64_key(key), key, on_lost)

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return lock.SharedAdvisoryLock(self.sessions, int64_key(key), key, on_lost)

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        if limit not in LIMITS:
            raise NotSupported(self.describe(f"a semaphore's limit must be below 2**31: {limit}"))
        return SemaphorePermit(self.sessions, int64_key(key), key, limit, on_lost)

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        return lock.AsyncAdvisoryLock(self.async_sessions, int64_key(key), key, on_lost)

    def groups(self) -> GroupStore:
        return self._groups

    async def close_async(self) -> None:
        await self.async_sessions.close_running()

    def describe_lock(self, key: bytes) -> LockInfo:
        rows = self._query(HELD, {"key": int64_key(key)})
        return LockInfo(key, _holder(*rows[0][1:4]), rows[0][0]) if rows else LockInfo(key, None, 0)

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        """Every held lock of this database whose name is recorded."""
        return [LockInfo(bytes(row[4]), _holder(*row[1:4]), row[0])
                for row in self._query(HELD, {"key": None}) if row[4] is not None]

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        """End the session holding ``key`` (``token`` cannot be checked: it must be None)."""
        if token is not None:
            raise NotSupported("PostgreSQL does not show a holder's token: break without one")
        info = self.describe_lock(key)
        if info.holder is None:
            return info
        try:
            ended = self._query(TERMINATE, {"key": int64_key(key), "pid": info.holder.session})
        except psycopg.errors.InsufficientPrivilege as exc:
            raise BreakRefused(f"PostgreSQL refused to end the holder's session (server pid "
                               f"{info.holder.session}): {exc}. The URL's role must be a member "
                               "of the holder's role or of pg_signal_backend (a superuser's "
                               "session: a superuser)") from None
        if not ended:
            raise HolderChanged(f"lock {info.name!r} was released while being broken")
        return info

    def describe(self, problem: object) -> str:
        """``problem`` prefixed with the redacted URL, with every secret removed."""
        return scrub(" ".join(f"PostgreSQL at {self.url.redacted()}: {problem}".split()), self.url)

    def _check_holds(self) -> None:
        self.sessions.check_holds()
        self.async_sessions.check_holds()

    def _query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of ``sql`` on a pooled session; a failed connection as a conch error."""
        session = self.sessions.borrow()
        try:
            rows = session.execute(sql, params).fetchall()
        except BaseException as exc:
            refused = isinstance(exc, psycopg.Error)
            self.sessions.pool.give_back(session, keep=refused and not session.closed)
            if isinstance(exc, psycopg.errors.InsufficientPrivilege) or not refused:
                raise
            raise BackendUnavailable(self.describe(exc)) from None
        self.sessions.pool.give_back(session)
        return rows


def _holder(pid: int, application: str | None, host: str) -> HolderInfo:
    """The holder whose server pid, application name and client host these are."""
    conch = (application or "").startswith(APPLICATION_PREFIX)
    member = application.removeprefix(APPLICATION_PREFIX) if application and conch else None
    return HolderInfo(member_id=member, host=host, session=str(pid))
