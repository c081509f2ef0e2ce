"""mysql:// groups beyond the contract: the faults of tests/backends/sql_groups.py (restart,
a killed membership session, rows and tables deleted behind the members' backs, dead entries
pruned), the entries' ``GET_LOCK`` names, a user without CREATE, and TLS."""

from __future__ import annotations

import time
import uuid

import pytest

import conch
from conch.backends.kit.sql_groups import GROUPS_TABLE, MEMBERS_TABLE
from conch.backends.mysql.groups import ENTRY_LOCK_PREFIX, TABLES
from tests.backends.sql_groups import GroupFaults, ServerFaults
from tests.servers.mysql import DATABASE, MySQLServer


class MySQLFaults(ServerFaults):
    """:class:`tests.backends.sql_groups.ServerFaults` on the shared MariaDB."""

    member_query = "session_timeout=4"  # checks every second

    def end_session(self, member_id: str) -> None:
        [(_, connection)] = self.locks_of(member_id)
        self.server.execute(f"KILL {connection}")

    def delete_entries(self, member_id: str) -> None:
        self.server.execute(f"DELETE FROM `{DATABASE}`.{MEMBERS_TABLE} "
                            f"WHERE member = '{member_id}'")

    def drop_tables(self, member_id: str) -> None:
        self.server.execute(f"DROP TABLE `{DATABASE}`.{MEMBERS_TABLE}, "
                            f"`{DATABASE}`.{GROUPS_TABLE}")

    def entries(self, member_id: str) -> int:
        return len(self.locks_of(member_id))

    def locks_of(self, member_id: str) -> list[tuple[object, ...]]:
        """Each entry's ``GET_LOCK`` name and the connection holding it (``member_id`` is a
        uuid: safe in the statement)."""
        return list(self.server.execute(f"SELECT entry_lock, IS_USED_LOCK(entry_lock) FROM "
                                   f"`{DATABASE}`.{MEMBERS_TABLE} WHERE member = '{member_id}'"))


class TestMySQLGroups(GroupFaults):
    """The faults every SQL backend's members survive, and the entries' lock names."""

    backend, faults_of = "mysql", MySQLFaults

    def test_entry_lock_names_are_64_ascii_characters_apart_from_the_lock_names(
        self, faults: MySQLFaults, member: conch.Coordinator, group_name: str,
    ) -> None:
        member.group(group_name).join()
        [(entry_lock, holder)] = faults.locks_of(member.member_id)
        assert isinstance(entry_lock, str) and len(entry_lock) == 64 and entry_lock.isascii()
        assert entry_lock.startswith(ENTRY_LOCK_PREFIX) and holder is not None


def test_a_user_without_create_is_told_what_to_grant_and_works_once_granted(
    mysql_server: MySQLServer, mysql_url: str,
) -> None:
    server = mysql_server
    database, user = f"groups_{uuid.uuid4().hex[:12]}", f"limited_{uuid.uuid4().hex[:8]}"
    server.create_database(database)
    server.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{server.password}'",
                   f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* "
                   f"TO '{user}'@'127.0.0.1'")
    try:
        with conch.connect(server.url_with(database=database)):  # makes conch_fencing
            pass
        with conch.connect(server.url_with(database=database, user=user)) as limited:
            with pytest.raises(conch.BackendUnavailable) as refused:
                limited.group("agents").join()
            assert "CREATE" in str(refused.value) and GROUPS_TABLE in str(refused.value)
            assert server.password not in str(refused.value)
            server.execute(f"USE `{database}`", *TABLES)  # what docs/mysql.md tells an admin
            limited.group("agents").join({"ok": True})
            assert limited.group("agents").members() == {limited.member_id: {"ok": True}}
    finally:
        server.execute(f"DROP DATABASE `{database}`", f"DROP USER '{user}'@'127.0.0.1'")


def test_groups_work_over_tls(mysql_tls_url: str) -> None:
    # The URL's user is created REQUIRE ISSUER: every session of it is TLS with the client
    # certificate, the membership session included.
    with conch.connect(mysql_tls_url) as member, conch.connect(mysql_tls_url) as reader:
        member.group("over-tls").join({"tls": True})
        assert reader.group("over-tls").members() == {member.member_id: {"tls": True}}
        member.group("over-tls").leave()


def test_a_membership_session_the_server_ended_while_idle_is_replaced(
    mysql_server: MySQLServer, mysql_url: str,
) -> None:
    with conch.connect(mysql_server.url_with(query="session_timeout=2")) as member:
        member.group("idle").create()
        time.sleep(3.5)  # no entry to check: the server ends the silent session (wait_timeout)
        assert member.group("idle").members() == {}
