"""postgresql:// groups beyond the contract: a restarted server, a terminated membership
session, an entry or the tables deleted behind the member's back, dead entries pruned, a role
without CREATE, TLS, and the entries' advisory keys kept apart from the locks'."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import psycopg
import pytest

import conch
from conch.backends.postgresql.groups import MEMBERS_TABLE, TABLES, entry_lock
from tests.backends import sql_groups
from tests.servers.postgresql import PostgreSQLServer
from tests.tls import PKI

FAST_HEARTBEAT = "heartbeat=0.5"


@pytest.fixture
def server(postgresql_server: PostgreSQLServer, postgresql_url: str) -> PostgreSQLServer:
    """The server, running (``postgresql_url`` restarts it if an earlier test stopped it)."""
    return postgresql_server


@pytest.fixture
def member(server: PostgreSQLServer) -> Iterator[conch.Coordinator]:
    """A member that checks its entries twice a second."""
    with conch.connect(server.url_with(query=FAST_HEARTBEAT)) as coordinator:
        yield coordinator


@pytest.fixture
def reader(server: PostgreSQLServer) -> Iterator[conch.Coordinator]:
    """Another coordinator, reading the groups."""
    with conch.connect(server.url) as coordinator:
        yield coordinator


@pytest.fixture
def group_name() -> str:
    return f"group-{uuid.uuid4().hex}"


def entries_of(server: PostgreSQLServer, member_id: str) -> int:
    """The rows the server keeps for ``member_id``'s entries."""
    rows = server.execute(f"SELECT count(*) FROM {MEMBERS_TABLE} WHERE member = %s",
                          member_id.encode())
    return int(str(rows[0][0]))


def membership_session(server: PostgreSQLServer, member: conch.Coordinator) -> object:
    """The server process (pid) whose two-int advisory locks keep ``member``'s entries."""
    rows = server.execute(
        "SELECT DISTINCT l.pid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND a.application_name = %s",
        f"conch {member.member_id}"[:63])
    assert len(rows) == 1, rows
    return rows[0][0]


def test_a_server_restart_drops_the_member_and_conch_puts_it_back(
    server: PostgreSQLServer, member: conch.Coordinator, reader: conch.Coordinator,
    group_name: str,
) -> None:
    told, back = sql_groups.rejoins_after_a_fault(member, reader, group_name, server.restart)
    print(f"told {told:.2f} s, back {back:.2f} s after the restart")


def test_a_terminated_membership_session_is_reported_and_the_member_rejoins(
    server: PostgreSQLServer, member: conch.Coordinator, reader: conch.Coordinator,
    group_name: str,
) -> None:
    def terminate() -> None:
        server.execute("SELECT pg_terminate_backend(%s)", membership_session(server, member))
    told, back = sql_groups.rejoins_after_a_fault(member, reader, group_name, terminate)
    print(f"told {told:.2f} s, back {back:.2f} s after the termination")


def test_an_entry_deleted_behind_the_members_back_is_reported_and_written_again(
    server: PostgreSQLServer, member: conch.Coordinator, reader: conch.Coordinator,
    group_name: str,
) -> None:
    def delete() -> None:
        server.execute(f"DELETE FROM {MEMBERS_TABLE} WHERE member = %s",
                       member.member_id.encode())
    sql_groups.rejoins_after_a_fault(member, reader, group_name, delete)
    assert entries_of(server, member.member_id) == 1


def test_tables_dropped_behind_the_members_back_are_made_again(
    server: PostgreSQLServer, member: conch.Coordinator, reader: conch.Coordinator,
    group_name: str,
) -> None:
    def wipe() -> None:
        server.execute(f"DROP TABLE {', '.join(reversed(TABLES))}")
    sql_groups.rejoins_after_a_fault(member, reader, group_name, wipe)
    assert group_name in reader.groups()


def test_a_killed_members_entry_is_deleted_by_the_next_read(
    server: PostgreSQLServer, reader: conch.Coordinator, group_name: str,
) -> None:
    sql_groups.a_killed_members_entry_is_deleted_by_the_next_read(
        server.url, reader, group_name, lambda member_id: entries_of(server, member_id))


def test_a_hostile_name_of_256_bytes_round_trips(
    member: conch.Coordinator, reader: conch.Coordinator,
) -> None:
    sql_groups.a_hostile_name_round_trips(member, reader)


def test_entries_are_two_int_advisory_locks_apart_from_the_lock_keys(
    server: PostgreSQLServer, member: conch.Coordinator, reader: conch.Coordinator,
    group_name: str,
) -> None:
    member.group(group_name).join()
    classid, objid = entry_lock(group_name.encode(), member.member_id.encode())
    assert server.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
        " AND classid = %s::oid AND objid = %s::oid AND pid = %s",
        classid, objid, membership_session(server, member)) == [(1,)]
    hash_input = b"conch-group\0" + group_name.encode() + b"\0" + member.member_id.encode()
    with reader.lock(hash_input)(blocking=False):  # a lock of the same name: another space
        assert member.member_id in reader.group(group_name).members()


def test_a_role_without_create_is_told_what_to_grant_and_works_once_granted(
    server: PostgreSQLServer, group_name: str,
) -> None:
    database, role = f"groups_{uuid.uuid4().hex[:12]}", f"limited_{uuid.uuid4().hex[:12]}"
    server.execute(f"CREATE ROLE {role} LOGIN")
    server.execute(f"CREATE DATABASE {database}")  # owned by postgres: no CREATE for the role
    try:
        with server.admin(database) as admin:
            admin.execute("CREATE SEQUENCE conch_fencing_token AS bigint;"
                          "CREATE TABLE conch_lock_names (key bigint PRIMARY KEY, name bytea);"
                          f"GRANT USAGE ON SEQUENCE conch_fencing_token TO {role};"
                          f"GRANT SELECT, INSERT ON conch_lock_names TO {role}")
            url = f"postgresql://{role}@127.0.0.1:{server.port}/{database}"
            with conch.connect(url) as limited:
                with pytest.raises(conch.BackendUnavailable) as refused:
                    limited.group(group_name).join()
                assert "CREATE" in str(refused.value)
                assert "conch_groups" in str(refused.value)
                for create in TABLES.values():
                    admin.execute(create)
                admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} "
                              f"TO {role}")
                limited.group(group_name).join({"ok": True})
                assert limited.group(group_name).members() == {limited.member_id: {"ok": True}}
    finally:
        server.execute(f"DROP DATABASE {database} WITH (FORCE)")
        server.execute(f"DROP ROLE {role}")


@pytest.fixture
def tls_url(server: PostgreSQLServer, pki: PKI) -> Iterator[str]:
    """The shared server with TLS switched on (a reload), as a URL that verifies it."""
    for source, target in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key")):
        shutil.copy(source, os.path.join(server.data_dir, target))
        shutil.chown(os.path.join(server.data_dir, target), "postgres", "postgres")
        os.chmod(os.path.join(server.data_dir, target), 0o600)
    settings = {"ssl": "on", "ssl_cert_file": os.path.join(server.data_dir, "server.crt"),
                "ssl_key_file": os.path.join(server.data_dir, "server.key")}
    for name, value in settings.items():
        server.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    server.execute("SELECT pg_reload_conf()")
    url = server.url_with(query=f"sslmode=verify-full&sslrootcert={pki.ca}")

    def serves_tls() -> bool:
        try:
            with conch.connect(url):
                return True
        except conch.BackendUnavailable:
            return False
    sql_groups.wait_until(serves_tls, 10.0, "TLS switched on")
    try:
        yield url
    finally:
        for name in settings:
            server.execute(f"ALTER SYSTEM RESET {name}")
        server.execute("SELECT pg_reload_conf()")


def test_groups_work_over_tls(server: PostgreSQLServer, tls_url: str, group_name: str) -> None:
    with conch.connect(tls_url) as member, conch.connect(tls_url) as reader:
        member.group(group_name).join({"tls": True})
        assert reader.group(group_name).members() == {member.member_id: {"tls": True}}
        encrypted = server.execute(
            "SELECT s.ssl FROM pg_stat_ssl AS s JOIN pg_stat_activity AS a ON a.pid = s.pid"
            " WHERE a.application_name = %s", f"conch {member.member_id}"[:63])
        assert encrypted and all(row == (True,) for row in encrypted), encrypted
    with pytest.raises(psycopg.OperationalError):  # the URL really checks the server
        psycopg.connect(server.url_with(query="sslmode=verify-full&sslrootcert=/dev/null"))
