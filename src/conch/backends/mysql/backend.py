"""``mysql://user:password@host:port/database``: MySQL / MariaDB user-level locks
(``GET_LOCK``), a session of its own per hold, fencing tokens from table ``conch_fencing``.
Options and the design: docs/mysql.md."""

from __future__ import annotations

from conch.backends.base import Backend, LockHandle, LossCallback
from conch.backends.kit.naming import hex_digest
from conch.backends.mysql import inspection
from conch.backends.mysql.client import Settings
from conch.backends.mysql.fencing import FENCING_TABLE as FENCING_TABLE
from conch.backends.mysql.fencing import ensure_fencing_table
from conch.backends.mysql.lock import MySQLLock
from conch.backends.mysql.session import MySQLSessions, close_quietly
from conch.capabilities import Capabilities
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
        self.sessions = MySQLSessions(url, self.settings)

    def connect(self) -> None:
        with self.sessions.translated_errors():
            session = self.sessions.take()
            try:
                ensure_fencing_table(session)
            except BaseException:
                close_quietly(session)
                raise
            self.sessions.give_back(session)

    def close(self) -> None:
        self.sessions.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return MySQLLock(self.sessions, self.server_name(key), HolderStamp(key, self.member_id),
                         on_lost)

    def describe_lock(self, key: bytes) -> LockInfo:
        return inspection.inspecting(self.sessions, lambda session: inspection.describe(
            session, self.server_name(key), key)[0])

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return inspection.inspecting(self.sessions, inspection.held_locks)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        return inspection.inspecting(self.sessions, lambda session: inspection.break_hold(
            session, self.server_name(key), key, token))

    def server_name(self, key: bytes) -> str:
        """The ``GET_LOCK`` name of lock ``key`` (names are server-wide, at most 64 characters,
        compared case-insensitively): ``conch:`` and 58 hex digits of SHA-256 over the
        database name, NUL and the key, so scoped to the database like the tokens."""
        scoped = self.settings.database.encode() + b"\0" + key
        return SERVER_NAME_PREFIX + hex_digest(scoped, 64 - len(SERVER_NAME_PREFIX))
