"""``postgresql://`` groups: a row per group and per member entry, in tables made on first
use. An entry counts while the coordinator's membership session holds the entry's two-``int``
advisory lock (a key space apart from the locks' ``bigint`` keys), so a dead process's
entries stop counting when its connection ends, and readers delete them. docs/postgresql.md,
"Groups"."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors

from conch.backends.base import GroupStore, LossCallback
from conch.backends.kit.session import Heartbeat
from conch.backends.postgresql.group_listener import CHANNEL, Listener, channel_payload
from conch.backends.postgresql.session import Session
from conch.errors import BackendUnavailable, GroupNotEmpty, GroupNotFound

T = TypeVar("T")
GROUPS_TABLE = "conch_groups"
MEMBERS_TABLE = "conch_group_members"
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
_LIVE = (f"live AS (SELECT {_ENTRY_KEY} AS entry_key FROM pg_locks WHERE locktype = 'advisory'"
         " AND objsubid = 2 AND granted"
         " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))")
# The live entries, then a NULL row when the group exists; the dead entries are deleted.
_MEMBERS = f"""WITH {_LIVE}, dead AS (DELETE FROM {MEMBERS_TABLE}
    WHERE group_name = %(group)s AND entry_key NOT IN (SELECT entry_key FROM live))
SELECT member, data FROM {MEMBERS_TABLE}
WHERE group_name = %(group)s AND entry_key IN (SELECT entry_key FROM live)
UNION ALL SELECT NULL, NULL FROM {GROUPS_TABLE} WHERE name = %(group)s"""
_JOIN = f"""WITH entry AS (INSERT INTO {MEMBERS_TABLE} (group_name, member, entry_key, data)
    VALUES (%(group)s, %(member)s, %(key)s, %(data)s) ON CONFLICT (group_name, member)
    DO UPDATE SET entry_key = EXCLUDED.entry_key, data = EXCLUDED.data RETURNING 1)
SELECT pg_notify('{CHANNEL}', %(payload)s) FROM entry"""
_LEAVE = f"""WITH entry AS (DELETE FROM {MEMBERS_TABLE}
    WHERE group_name = %(group)s AND member = %(member)s RETURNING 1)
SELECT pg_notify('{CHANNEL}', %(payload)s) FROM entry"""
# Which of this member's entries still exist and are locked by this session.
_PRESENT = f"""SELECT group_name FROM {MEMBERS_TABLE}
WHERE member = %(member)s AND group_name = ANY(%(groups)s) AND entry_key IN (
    SELECT {_ENTRY_KEY} FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2
    AND granted AND pid = pg_backend_pid())"""


def entry_lock(group: bytes, member: bytes) -> tuple[int, int]:
    """The two-``int`` advisory key of ``member``'s entry in ``group`` (62 bits of SHA-256)."""
    digest = hashlib.sha256(b"conch-group\0" + group + b"\0" + member).digest()
    return (int.from_bytes(digest[:4], "big") >> 1, int.from_bytes(digest[4:8], "big") >> 1)


class PostgreSQLGroups(GroupStore):
    """One coordinator's groups: its entries' locks on one session of its own (opened by the
    first call), checked every heartbeat; changes pushed by a :class:`Listener`."""

    poll_interval = 1.0  # joins and leaves are pushed; a dead member is seen by reading

    def __init__(self, open_session: Callable[[], Session], conninfo: str, member_id: str,
                 heartbeat: float, describe: Callable[[object], str]) -> None:
        self._open_session, self._describe = open_session, describe
        self._member = member_id.encode("utf-8", "surrogateescape")
        self._mutex = threading.Lock()
        self._session: Session | None = None
        self._tables_ready = False
        self._entries: dict[bytes, tuple[LossCallback, Session]] = {}  # by group
        self._listener = Listener(conninfo, describe)
        self._heartbeat = Heartbeat(f"conch-postgresql-groups {member_id}", heartbeat,
                                    self._check_entries)
        self._closed = False

    def create(self, group: bytes) -> bool:
        return self._run(lambda session: session.execute(
            f"INSERT INTO {GROUPS_TABLE} (name) VALUES (%s) ON CONFLICT DO NOTHING RETURNING 1",
            (group,)).fetchone() is not None)

    def delete(self, group: bytes) -> None:
        def delete(session: Session) -> None:
            live = _rows_to_members(session.execute(_MEMBERS, {"group": group}).fetchall())
            if live:
                raise GroupNotEmpty(f"group {group!r} still has {len(live)} members")
            try:
                deleted = session.execute(f"DELETE FROM {GROUPS_TABLE} WHERE name = %s "
                                          "RETURNING 1", (group,)).fetchone()
            except errors.ForeignKeyViolation:
                raise GroupNotEmpty(f"a member joined group {group!r} meanwhile") from None
            if deleted is None:
                raise GroupNotFound(f"group {group!r} does not exist")
        self._run(delete)

    def names(self) -> list[bytes]:
        return self._run(lambda session: [bytes(row[0]) for row in session.execute(
            f"SELECT name FROM {GROUPS_TABLE}").fetchall()])

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        key = entry_lock(group, self._member)

        def join(session: Session) -> None:
            entry = self._entries.get(group)
            locked = entry is not None and entry[1] is session  # joined before: update
            if not locked and not _one(session, "SELECT pg_try_advisory_lock(%s, %s)", key):
                raise BackendUnavailable(self._describe(
                    f"member {self._member!r} is already in group {group!r} through another "
                    "session: two coordinators share this member id"))
            try:
                session.execute(_JOIN, self._params(group, data=data, key=key[0] << 32 | key[1]))
            except errors.ForeignKeyViolation:
                _one(session, "SELECT pg_advisory_unlock(%s, %s)", key)
                self._entries.pop(group, None)
                raise GroupNotFound(f"group {group!r} does not exist") from None
            self._entries[group] = (on_lost, session)
        self._run(join)
        self._heartbeat_started()

    def leave(self, group: bytes) -> bool:
        key = entry_lock(group, self._member)

        def leave(session: Session) -> bool:
            entry = self._entries.pop(group, None)
            if entry is None or entry[1] is not session:
                return False
            session.execute(_LEAVE, self._params(group))
            _one(session, "SELECT pg_advisory_unlock(%s, %s)", key)
            return True
        with self._mutex:
            if group not in self._entries:
                return False
        return self._run(leave)

    def members(self, group: bytes) -> dict[str, bytes] | None:
        return self._run(lambda session: _rows_to_members(
            session.execute(_MEMBERS, {"group": group}).fetchall()))

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        return self._listener.subscribe(group, changed)

    def close(self) -> None:
        """The coordinator stops: end the listener, the checks and the membership session
        (the server frees its entries' locks)."""
        with self._mutex:
            self._closed = True
            session, self._session = self._session, None
            self._entries.clear()
        self._listener.close()
        self._heartbeat.stop()
        if session is not None:
            session.end()

    def _params(self, group: bytes, **more: object) -> dict[str, object]:
        return {"group": group, "member": self._member, "payload": channel_payload(group),
                **more}

    def _run(self, work: Callable[[Session], T]) -> T:
        """``work`` on the membership session (opened when missing), making the tables when
        they are missing (first use, or dropped); client errors become conch's."""
        with self._mutex:
            if self._closed:
                raise BackendUnavailable(self._describe("the coordinator was stopped"))
            session = self._session
            if session is None or session.closed:
                session = self._session = self._open_session()
            try:
                try:
                    return self._work_on(session, work)
                except errors.UndefinedTable:  # dropped since they were made: make them again
                    self._tables_ready = False
                    return self._work_on(session, work)
            except errors.InsufficientPrivilege as exc:
                raise BackendUnavailable(self._describe(
                    f"{exc}: group membership needs SELECT, INSERT, UPDATE, DELETE on tables "
                    f"{GROUPS_TABLE} and {MEMBERS_TABLE} (docs/postgresql.md, Groups)")) from None
            except psycopg.Error as exc:
                raise BackendUnavailable(self._describe(exc)) from None

    def _work_on(self, session: Session, work: Callable[[Session], T]) -> T:
        if not self._tables_ready:
            self._make_tables(session)
        return work(session)

    def _make_tables(self, session: Session) -> None:
        for name, create in TABLES.items():
            if session.execute(f"SELECT to_regclass('{name}')").fetchone() != (None,):
                continue
            try:
                with contextlib.suppress(errors.UniqueViolation,  # made meanwhile
                                         errors.DuplicateTable):
                    session.execute(create)
            except errors.InsufficientPrivilege as exc:
                raise BackendUnavailable(self._describe(
                    f"cannot create table {name} ({exc}): grant this role CREATE on the "
                    "schema, or have an administrator create the group tables "
                    "(docs/postgresql.md, Groups)")) from None
        self._tables_ready = True

    def _heartbeat_started(self) -> None:
        with contextlib.suppress(RuntimeError):  # started already
            self._heartbeat.start()

    def _check_entries(self) -> None:
        """The heartbeat: report each entry whose session ended, or whose row or lock is gone
        (deleted behind this member's back), and free what is left of it."""
        lost: list[tuple[LossCallback, str]] = []
        with self._mutex:
            session, entries = self._session, dict(self._entries)
            live = session is not None and not session.closed
            present: set[bytes] = set()
            ended = "its membership session ended"
            if session is not None and live and entries:
                try:
                    present = {bytes(row[0]) for row in session.execute(
                        _PRESENT, {"member": self._member, "groups": list(entries)})}
                except psycopg.Error as exc:
                    if not session.closed:
                        return  # no verdict; the next beat asks again
                    live, ended = False, f"its membership session failed: {exc}"
            for group, (on_lost, entry_session) in entries.items():
                if group in present:
                    continue
                if live and entry_session is session:
                    reason = "its entry was deleted on the server"
                    with contextlib.suppress(psycopg.Error):
                        _one(entry_session, "SELECT pg_advisory_unlock(%s, %s)",
                             entry_lock(group, self._member))
                else:
                    reason = ended
                del self._entries[group]
                lost.append((on_lost, reason))
        for on_lost, reason in lost:
            on_lost(self._describe(reason))


def _one(session: Session, sql: str, params: tuple[int, int]) -> object:
    row = session.execute(sql, params).fetchone()
    return None if row is None else row[0]


def _rows_to_members(rows: list[tuple[Any, ...]]) -> dict[str, bytes] | None:
    """``_MEMBERS``'s rows: the entries by member id, or ``None`` without the group's row."""
    if all(member is not None for member, _ in rows):
        return None
    return {bytes(member).decode("utf-8", "surrogateescape"): bytes(data)
            for member, data in rows if member is not None}
