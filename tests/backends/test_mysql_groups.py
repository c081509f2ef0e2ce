"""mysql:// groups beyond the contract: a restarted server, a killed membership session, an
entry or the tables deleted behind the member's back, dead entries pruned, a user without
CREATE, TLS, and the entries' ``GET_LOCK`` names kept apart from the locks'."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import conch
from conch.backends.mysql.groups import ENTRY_LOCK_PREFIX, GROUPS_TABLE, MEMBERS_TABLE, TABLES
from tests.backends import sql_groups
from tests.servers.mysql import DATABASE, MySQLServer

FAST_SESSION = "session_timeout=4"


@pytest.fixture
def server(mysql_server: MySQLServer, mysql_url: str) -> MySQLServer:
    """The server, running (``mysql_url`` restarts it if an earlier test stopped it)."""
    return mysql_server


@pytest.fixture
def member(server: MySQLServer) -> Iterator[conch.Coordinator]:
    """A member that checks its entries every second."""
    with conch.connect(server.url_with(query=FAST_SESSION)) as coordinator:
        yield coordinator


@pytest.fixture
def reader(server: MySQLServer) -> Iterator[conch.Coordinator]:
    """Another coordinator, reading the groups."""
    with conch.connect(server.url) as coordinator:
        yield coordinator


@pytest.fixture
def group_name() -> str:
    return f"group-{uuid.uuid4().hex}"


def entries_of(server: MySQLServer, member_id: str) -> list[tuple[object, ...]]:
    """The entry lock names and their holders' connections of ``member_id`` (a uuid)."""
    return server.execute(f"SELECT entry_lock, IS_USED_LOCK(entry_lock) FROM "
                          f"`{DATABASE}`.{MEMBERS_TABLE} WHERE member = '{member_id}'")


def test_a_server_restart_drops_the_member_and_conch_puts_it_back(
    server: MySQLServer, member: conch.Coordinator, reader: conch.Coordinator, group_name: str,
) -> None:
    told, back = sql_groups.rejoins_after_a_fault(member, reader, group_name, server.restart)
    print(f"told {told:.2f} s, back {back:.2f} s after the restart")


def test_a_killed_membership_session_is_reported_and_the_member_rejoins(
    server: MySQLServer, member: conch.Coordinator, reader: conch.Coordinator, group_name: str,
) -> None:
    def kill() -> None:
        [(_, connection)] = entries_of(server, member.member_id)
        server.execute(f"KILL {connection}")
    told, back = sql_groups.rejoins_after_a_fault(member, reader, group_name, kill)
    print(f"told {told:.2f} s, back {back:.2f} s after KILL")


def test_an_entry_deleted_behind_the_members_back_is_reported_and_written_again(
    server: MySQLServer, member: conch.Coordinator, reader: conch.Coordinator, group_name: str,
) -> None:
    def delete() -> None:
        server.execute(f"DELETE FROM `{DATABASE}`.{MEMBERS_TABLE} "
                       f"WHERE member = '{member.member_id}'")
    sql_groups.rejoins_after_a_fault(member, reader, group_name, delete)
    assert len(entries_of(server, member.member_id)) == 1


def test_tables_dropped_behind_the_members_back_are_made_again(
    server: MySQLServer, member: conch.Coordinator, reader: conch.Coordinator, group_name: str,
) -> None:
    def wipe() -> None:
        server.execute(f"DROP TABLE `{DATABASE}`.{MEMBERS_TABLE}, `{DATABASE}`.{GROUPS_TABLE}")
    sql_groups.rejoins_after_a_fault(member, reader, group_name, wipe)
    assert group_name in reader.groups()


def test_a_killed_members_entry_is_deleted_by_the_next_read(
    server: MySQLServer, reader: conch.Coordinator, group_name: str,
) -> None:
    sql_groups.a_killed_members_entry_is_deleted_by_the_next_read(
        server.url, reader, group_name,
        lambda member_id: len(entries_of(server, member_id)))


def test_a_hostile_name_of_256_bytes_round_trips(
    member: conch.Coordinator, reader: conch.Coordinator,
) -> None:
    sql_groups.a_hostile_name_round_trips(member, reader)


def test_entry_lock_names_are_64_ascii_characters_apart_from_the_lock_names(
    server: MySQLServer, member: conch.Coordinator, reader: conch.Coordinator, group_name: str,
) -> None:
    member.group(group_name).join()
    [(entry_lock, holder)] = entries_of(server, member.member_id)
    assert isinstance(entry_lock, str) and len(entry_lock) == 64 and entry_lock.isascii()
    assert entry_lock.startswith(ENTRY_LOCK_PREFIX) and holder is not None
    with reader.lock(group_name)(blocking=False):  # a lock of the group's name: no conflict
        assert member.member_id in reader.group(group_name).members()


def test_a_user_without_create_is_told_what_to_grant_and_works_once_granted(
    server: MySQLServer, group_name: str,
) -> None:
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
                limited.group(group_name).join()
            assert "CREATE" in str(refused.value) and GROUPS_TABLE in str(refused.value)
            assert server.password not in str(refused.value)
            server.execute(f"USE `{database}`", *TABLES)
            limited.group(group_name).join({"ok": True})
            assert limited.group(group_name).members() == {limited.member_id: {"ok": True}}
    finally:
        server.execute(f"DROP DATABASE `{database}`", f"DROP USER '{user}'@'127.0.0.1'")


def test_groups_work_over_tls(mysql_tls_url: str, group_name: str) -> None:
    # The URL's user is created REQUIRE ISSUER: every session of it is TLS with the client
    # certificate, the membership session included.
    with conch.connect(mysql_tls_url) as member, conch.connect(mysql_tls_url) as reader:
        member.group(group_name).join({"tls": True})
        assert reader.group(group_name).members() == {member.member_id: {"tls": True}}
