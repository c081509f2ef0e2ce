"""``mysql://user:password@host:port/database``: MySQL / MariaDB user-level locks
(``GET_LOCK``), a session of its own per hold, fencing tokens from table ``conch_fencing``.
Options and the design: docs/mysql.md."""

from __future__ import annotations

from conch.backends.base import Backend, GroupStore, LockHandle, LossCallback
from conch.backends.kit.errors import scrub
from conch.backends.kit.naming import hex_digest
from conch.backends.mysql import inspection
from conch.backends.mysql.client import Settings
from conch.backends.mysql.groups import MySQLGroups
from conch.backends.mysql.lock import MySQLLock, ensure_fencing_table
from conch.backends.mysql.semaphore import CREATE_SEMAPHORES_TABLE, LIMITS, MySQLPermit
from conch.backends.mysql.session import MySQLSessions
from conch.capabilities import Capabilities
from conch.errors import NotSupported
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

SERVER_NAME_PREFIX = "conch:"


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
        with self.sessions.lent() as session:
            return inspection.describe(session, self.server_name(key), key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        with self.sessions.lent() as session:
            return inspection.held_locks(session)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        with self.sessions.lent() as session:
            return inspection.break_hold(session, self.server_name(key), key, token)

    def server_name(self, key: bytes) -> str:
        """The ``GET_LOCK`` name of lock ``key`` (names are server-wide, at most 64 characters,
        compared case-insensitively): ``conch:`` and 58 hex digits of SHA-256 over the
        database name, NUL and the key, so scoped to the database like the tokens."""
        return SERVER_NAME_PREFIX + hex_digest(self._scoped(key), 64 - len(SERVER_NAME_PREFIX))

    def _scoped(self, key: bytes) -> bytes:
        return self.settings.database.encode() + b"\0" + key
