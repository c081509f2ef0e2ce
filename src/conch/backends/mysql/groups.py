"""``mysql://`` groups (kit/sql_groups.py): entries live while their ``conch-group:`` lock is
held; watchers poll. docs/mysql.md, "Groups"."""

from __future__ import annotations

from collections.abc import Callable

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import ER  # type: ignore[import-untyped]

from conch.backends.kit.naming import hex_digest
from conch.backends.kit.sql_groups import GROUPS_TABLE, MEMBERS_TABLE, Rows, SQLGroups
from conch.backends.mysql import client
from conch.backends.mysql.client import Connection, Settings
from conch.errors import BackendUnavailable, NotSupported

ENTRY_LOCK_PREFIX = "conch-group:"
MAX_MEMBER_ID_BYTES = 1024
TABLES = (  # made on first use when missing, in this order (the foreign key)
    f"CREATE TABLE IF NOT EXISTS {GROUPS_TABLE} (name VARBINARY(256) NOT NULL PRIMARY KEY)"
    " ENGINE=InnoDB",
    f"CREATE TABLE IF NOT EXISTS {MEMBERS_TABLE} (group_name VARBINARY(256) NOT NULL,"
    f" member VARBINARY({MAX_MEMBER_ID_BYTES}) NOT NULL,"
    " entry_lock CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,"
    " data MEDIUMBLOB NOT NULL, PRIMARY KEY (group_name, member),"
    f" FOREIGN KEY (group_name) REFERENCES {GROUPS_TABLE} (name)) ENGINE=InnoDB",
)


class MySQLGroups(SQLGroups[Connection]):
    """One coordinator's groups, on a session of their own checked every check_interval."""

    poll_interval = 1.0  # MySQL cannot notify: watchers read
    client_errors = client.CLIENT_ERRORS
    missing_table = frozenset({ER.NO_SUCH_TABLE})
    referenced = frozenset({ER.NO_REFERENCED_ROW_2, ER.ROW_IS_REFERENCED_2})
    create_group = (f"INSERT INTO {GROUPS_TABLE} (name) VALUES (%(group)s)"
                    " ON DUPLICATE KEY UPDATE name = name")
    # Every entry with whether it is live, then a row when the group exists (a plain read:
    # the dead entries are deleted one by one after, only when there are some).
    read_members = (f"SELECT member, data, IS_USED_LOCK(entry_lock) IS NOT NULL"
                    f" FROM {MEMBERS_TABLE} WHERE group_name = %(group)s UNION ALL"
                    f" SELECT NULL, NULL, TRUE FROM {GROUPS_TABLE} WHERE name = %(group)s")
    prune_member = (f"DELETE FROM {MEMBERS_TABLE} WHERE group_name = %(group)s"
                    " AND member = %(member)s AND IS_USED_LOCK(entry_lock) IS NULL")
    lock_entry = "SELECT GET_LOCK(%(lock)s, 0)"
    write_entry = (f"INSERT INTO {MEMBERS_TABLE} (group_name, member, entry_lock, data)"
                   " VALUES (%(group)s, %(member)s, %(lock)s, %(data)s)"
                   " ON DUPLICATE KEY UPDATE entry_lock = VALUES(entry_lock), data = VALUES(data)")
    delete_entry = (f"DELETE FROM {MEMBERS_TABLE}"
                    " WHERE group_name = %(group)s AND member = %(member)s")
    unlock_entry = "DO RELEASE_LOCK(%(lock)s)"
    # Which of this member's entries still exist and are locked by this session.
    present_entries = (f"SELECT group_name FROM {MEMBERS_TABLE} WHERE member = %(member)s AND"
                       " group_name IN %(groups)s AND IS_USED_LOCK(entry_lock) = CONNECTION_ID()")

    def __init__(self, settings: Settings, member_id: str,
                 describe: Callable[[object], str]) -> None:
        # PyMySQL sends nothing when a connection is collected, only on close(): a forked
        # child can just drop the parent's.
        super().__init__(lambda: client.open_connection(settings), client.close_quietly,
                         lambda session: None, member_id, settings.check_interval, describe)
        self._settings = settings
        if len(self.member) > MAX_MEMBER_ID_BYTES:
            raise NotSupported(describe(
                f"mysql:// groups take member ids of at most {MAX_MEMBER_ID_BYTES} bytes"))

    def _run(self, session: Connection, sql: str, params: dict[str, object]
             ) -> tuple[int, Rows]:
        with session.cursor() as cursor:
            return int(cursor.execute(sql, params)), list(cursor.fetchall())

    def _entry(self, group: bytes) -> dict[str, object]:
        """The ``GET_LOCK`` name of this member's entry in ``group``, scoped to the database."""
        scoped = b"\0".join((self._settings.database.encode(), group, self.member))
        return {"lock": ENTRY_LOCK_PREFIX + hex_digest(scoped, 64 - len(ENTRY_LOCK_PREFIX))}

    def _code(self, exc: Exception) -> object:
        return exc.args[0] if isinstance(exc, pymysql.Error) and exc.args else None

    def _broken(self, session: Connection, exc: Exception) -> bool:
        return not session.open or client.session_gone(exc)

    def _prepare(self, session: Connection) -> None:
        # CREATE TABLE IF NOT EXISTS needs the CREATE privilege even when the table exists.
        if self._run(session, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA ="
                     " DATABASE() AND TABLE_NAME IN %(groups)s",
                     {"groups": [GROUPS_TABLE, MEMBERS_TABLE]})[0] == 2:
            return
        for create in TABLES:
            try:
                self._run(session, create, {})
            except (pymysql.ProgrammingError, pymysql.OperationalError) as exc:
                if exc.args[0] != ER.TABLEACCESS_DENIED_ERROR:
                    raise
                raise BackendUnavailable(self.describe(
                    f"cannot create the group tables {GROUPS_TABLE} and {MEMBERS_TABLE} "
                    f"({exc.args[1]}): grant this user CREATE and REFERENCES on the database, "
                    "or have an administrator create them (docs/mysql.md, Groups)")) from None

    def _describe_error(self, exc: Exception) -> str:
        if self._code(exc) in (ER.TABLEACCESS_DENIED_ERROR, ER.COLUMNACCESS_DENIED_ERROR):
            return (f"{exc.args[1]}: group membership needs SELECT, INSERT, UPDATE, DELETE on "
                    f"tables {GROUPS_TABLE} and {MEMBERS_TABLE} (docs/mysql.md, Groups)")
        return client.describe(exc, self._settings)

