"""``postgresql://`` groups (kit/sql_groups.py): entries live while their two-``int`` advisory
lock is held; changes ``NOTIFY`` ``conch_groups``. docs/postgresql.md, "Groups"."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable

import psycopg
from psycopg import errors

from conch.backends.kit.group_subscribers import GroupSubscribers, Wake
from conch.backends.kit.naming import hex_digest
from conch.backends.kit.sql_groups import GROUPS_TABLE, MEMBERS_TABLE, Rows, SQLGroups
from conch.backends.postgresql.session import Session, create_missing, forget_connection
from conch.backends.postgresql.statements import THIS_DATABASE
from conch.errors import BackendUnavailable, ConchError

log = logging.getLogger("conch")
CHANNEL = "conch_groups"
RECONNECT_DELAY = 1.0

IDLE_LIMIT_FACTOR = 3
"""The server ends a membership session silent for this many times the member's own limit."""
TABLES = {  # made on first use when missing
    GROUPS_TABLE: f"CREATE TABLE IF NOT EXISTS {GROUPS_TABLE} (name bytea PRIMARY KEY)",
    MEMBERS_TABLE: f"CREATE TABLE IF NOT EXISTS {MEMBERS_TABLE} ("
                   f"group_name bytea NOT NULL REFERENCES {GROUPS_TABLE}, member bytea NOT NULL,"
                   " entry_key bigint NOT NULL, data bytea NOT NULL,"
                   " PRIMARY KEY (group_name, member))",
}
# pg_locks shows a two-int advisory key as classid, objid and objsubid 2; both halves are
# below 2**31, so entry_key = classid << 32 | objid.
_ENTRY_KEY = "(classid::bigint << 32) | objid::bigint"
_GRANTED = "FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted"
_LIVE = f"live AS (SELECT {_ENTRY_KEY} AS entry_key {_GRANTED} AND {THIS_DATABASE})"


def channel_payload(group: bytes) -> str:
    """What a change of ``group`` sends on :data:`CHANNEL` (short, whatever the name)."""
    return hex_digest(b"conch-group\0" + group, 32)


def entry_lock(group: bytes, member: bytes) -> tuple[int, int]:
    """The two-``int`` advisory key of ``member``'s entry in ``group`` (62 bits of SHA-256)."""
    digest = hashlib.sha256(b"conch-group\0" + group + b"\0" + member).digest()
    return (int.from_bytes(digest[:4], "big") >> 1, int.from_bytes(digest[4:8], "big") >> 1)


class PostgreSQLGroups(SQLGroups[Session]):
    """One coordinator's groups, on a session of their own; a thread hears :data:`CHANNEL`."""

    poll_interval = 1.0  # joins and leaves are pushed; a dead member is seen by reading
    client_errors = (psycopg.Error,)
    missing_table = frozenset({errors.UndefinedTable.sqlstate})
    referenced = frozenset({errors.ForeignKeyViolation.sqlstate})
    create_group = f"INSERT INTO {GROUPS_TABLE} (name) VALUES (%(group)s) ON CONFLICT DO NOTHING"
    # The live entries, then a row when the group exists; the dead entries are deleted.
    read_members = f"""WITH {_LIVE}, dead AS (DELETE FROM {MEMBERS_TABLE}
    WHERE group_name = %(group)s AND entry_key NOT IN (SELECT entry_key FROM live))
SELECT member, data, TRUE FROM {MEMBERS_TABLE}
WHERE group_name = %(group)s AND entry_key IN (SELECT entry_key FROM live)
UNION ALL SELECT NULL, NULL, TRUE FROM {GROUPS_TABLE} WHERE name = %(group)s"""
    prune_member = None
    lock_entry = "SELECT pg_try_advisory_lock(%(classid)s, %(objid)s)"
    write_entry = f"""WITH entry AS (
    INSERT INTO {MEMBERS_TABLE} (group_name, member, entry_key, data)
    VALUES (%(group)s, %(member)s, %(key)s, %(data)s) ON CONFLICT (group_name, member)
    DO UPDATE SET entry_key = EXCLUDED.entry_key, data = EXCLUDED.data RETURNING 1)
SELECT pg_notify('{CHANNEL}', %(payload)s) FROM entry"""
    delete_entry = f"""WITH entry AS (DELETE FROM {MEMBERS_TABLE}
    WHERE group_name = %(group)s AND member = %(member)s RETURNING 1)
SELECT pg_notify('{CHANNEL}', %(payload)s) FROM entry"""
    unlock_entry = "SELECT pg_advisory_unlock(%(classid)s, %(objid)s)"
    present_entries = f"""SELECT group_name FROM {MEMBERS_TABLE}
WHERE member = %(member)s AND group_name = ANY(%(groups)s)
    AND entry_key IN (SELECT {_ENTRY_KEY} {_GRANTED} AND pid = pg_backend_pid())"""

    def __init__(self, open_session: Callable[[], Session], member_id: str,
                 heartbeat: float, reply_timeout: float,
                 describe: Callable[[object], str]) -> None:
        self._open_session = open_session
        # The server ends a membership session silent this long (PostgreSQL 14+): a lease.
        self.idle_limit = IDLE_LIMIT_FACTOR * (heartbeat + reply_timeout)
        super().__init__(self._membership_session, Session.end, forget_connection, member_id,
                         heartbeat, describe)
        self._subscribers = GroupSubscribers("conch-postgresql-group-listener", self._listen_loop)
        self._listening: Session | None = None  # the LISTEN thread's session
        self._failing = False  # the last attempt to listen failed (and was logged)

    def _membership_session(self) -> Session:
        session = self._open_session()
        try:
            session.execute("SELECT set_config('idle_session_timeout', %s, false)",
                            (f"{math.ceil(self.idle_limit * 1000)}ms",))
        except errors.UndefinedObject:  # before PostgreSQL 14: kept until the connection ends
            pass
        except psycopg.Error as exc:
            session.end()
            raise BackendUnavailable(self.describe(exc)) from None
        return session

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        return self._subscribers.subscribe(channel_payload(group).encode(), changed)

    def close(self) -> None:
        """Stop listening (the thread's wait is cut short: its socket shut), then the rest."""
        self._subscribers.stop()
        if (session := self._listening) is not None:
            session.shutdown()
        super().close()

    def forget_parent(self) -> None:
        """In a forked child: the parent's sessions left be."""
        super().forget_parent()
        self._subscribers.forget_parent()
        session, self._listening = self._listening, None
        if session is not None:
            forget_connection(session)

    def _run(self, session: Session, sql: str, params: dict[str, object]) -> tuple[int, Rows]:
        cursor = session.execute(sql, params)
        return cursor.rowcount, cursor.fetchall() if cursor.description else []

    def _entry(self, group: bytes) -> dict[str, object]:
        classid, objid = entry_lock(group, self.member)
        return {"classid": classid, "objid": objid, "key": classid << 32 | objid,
                "payload": channel_payload(group)}

    def _code(self, exc: Exception) -> object:
        return getattr(exc, "sqlstate", None)

    def _broken(self, session: Session, exc: Exception) -> bool:
        return session.closed

    def _prepare(self, session: Session) -> None:
        try:
            create_missing(session, TABLES)
        except errors.InsufficientPrivilege as exc:
            raise BackendUnavailable(self.describe(
                f"cannot create the group tables {' and '.join(TABLES)} ({exc}): grant this "
                "role CREATE on the schema, or have an administrator create them "
                "(docs/postgresql.md, Groups)")) from None

    def _describe_error(self, exc: Exception) -> str:
        if isinstance(exc, errors.InsufficientPrivilege):
            return (f"{exc}: group membership needs SELECT, INSERT, UPDATE, DELETE on tables "
                    f"{GROUPS_TABLE} and {MEMBERS_TABLE} (docs/postgresql.md, Groups)")
        return str(exc)

    def _listen_loop(self, stopped: threading.Event, wake: Wake) -> None:
        while not stopped.is_set():
            try:
                self._listen(stopped, wake)
            except (psycopg.Error, ConchError) as exc:
                if stopped.is_set():
                    return
                # Once per outage: watchers still read every poll interval meanwhile.
                log.log(logging.DEBUG if self._failing else logging.WARNING,
                        "conch: listening for group changes failed, retrying every %g s: %s",
                        RECONNECT_DELAY, exc if isinstance(exc, ConchError)
                        else self.describe(exc))
                self._failing = True
            wake(None)  # a notification may have been missed meanwhile
            stopped.wait(RECONNECT_DELAY)

    def _listen(self, stopped: threading.Event, wake: Wake) -> None:
        session = self._listening = self._open_session()
        try:
            if stopped.is_set():  # close() came first: it could not shut this one
                return
            session.execute(f"LISTEN {CHANNEL}")
            self._failing = False
            wake(None)  # changes made before LISTEN took effect
            session.limit = None  # wait as long as it takes (green under eventlet); close()
            for notification in session.notifies():  # shuts the socket to end the wait
                wake((notification.payload.encode(),))
        finally:
            self._listening = None
            session.end()
