"""postgresql:// groups beyond the contract: the faults of tests/backends/sql_groups.py
(restart, a terminated membership session, rows and tables deleted behind the members' backs,
dead entries pruned), the entries' two-int advisory keys, a role without CREATE, and TLS."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

import conch
from conch.backends.kit.sql_groups import MEMBERS_TABLE
from conch.backends.postgresql.groups import CHANNEL, TABLES, entry_lock
from tests.backends.sql_groups import GroupFaults, ServerFaults, joined_worker
from tests.servers.base import wait_until
from tests.servers.postgresql import PostgreSQLServer
from tests.tls import PKI


class PostgreSQLFaults(ServerFaults):
    """:class:`tests.backends.sql_groups.ServerFaults` on the shared PostgreSQL."""

    member_query = "heartbeat=0.5"

    def end_session(self, member_id: str) -> None:
        self.server.execute("SELECT pg_terminate_backend(%s)", self.session_of(member_id))

    def delete_entries(self, member_id: str) -> None:
        self.server.execute(f"DELETE FROM {MEMBERS_TABLE} WHERE member = %s", member_id.encode())

    def drop_tables(self, member_id: str) -> None:
        self.server.execute(f"DROP TABLE {', '.join(reversed(TABLES))}")

    def entries(self, member_id: str) -> int:
        rows = self.server.execute(f"SELECT count(*) FROM {MEMBERS_TABLE} WHERE member = %s",
                                   member_id.encode())
        return int(str(rows[0][0]))

    def session_of(self, member_id: str) -> object:
        """The server process (pid) whose two-int advisory locks keep the member's entries."""
        rows = self.server.execute(
            "SELECT DISTINCT l.pid FROM pg_locks AS l JOIN pg_stat_activity AS a"
            " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.objsubid = 2"
            " AND a.application_name = %s", f"conch {member_id}"[:63])
        assert len(rows) == 1, rows
        return rows[0][0]


class TestPostgreSQLGroups(GroupFaults):
    """The faults every SQL backend's members survive, and the entries' advisory keys."""

    backend, faults_of = "postgresql", PostgreSQLFaults

    def test_an_entry_is_a_two_int_advisory_lock_of_the_membership_session(
        self, faults: PostgreSQLFaults, member: conch.Coordinator, group_name: str,
    ) -> None:
        classid, objid = entry_lock(group_name.encode(), member.member_id.encode())
        member.group(group_name).join()
        assert faults.server.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
            " AND classid = %s::oid AND objid = %s::oid AND pid = %s",
            classid, objid, faults.session_of(member.member_id)) == [(1,)]


def test_a_role_without_create_is_told_what_to_grant_and_works_once_granted(
    postgresql_server: PostgreSQLServer, postgresql_url: str,
) -> None:
    server = postgresql_server
    database, role = f"groups_{uuid.uuid4().hex[:12]}", f"limited_{uuid.uuid4().hex[:12]}"
    server.execute(f"CREATE ROLE {role} LOGIN")
    server.execute(f"CREATE DATABASE {database}")  # owned by postgres: no CREATE for the role
    try:
        with server.admin(database) as admin:
            admin.execute("CREATE SEQUENCE conch_fencing_token AS bigint;"
                          "CREATE TABLE conch_lock_names (key bigint PRIMARY KEY, name bytea);"
                          f"GRANT USAGE ON SEQUENCE conch_fencing_token TO {role};"
                          f"GRANT SELECT, INSERT ON conch_lock_names TO {role}")
            with conch.connect(f"postgresql://{role}@127.0.0.1:{server.port}/{database}") \
                    as limited:
                with pytest.raises(conch.BackendUnavailable) as refused:
                    limited.group("agents").join()
                assert "CREATE" in str(refused.value) and "conch_groups" in str(refused.value)
                for create in TABLES.values():  # what docs/postgresql.md tells an admin
                    admin.execute(create)
                admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} "
                              f"TO {role}")
                limited.group("agents").join({"ok": True})
                assert limited.group("agents").members() == {limited.member_id: {"ok": True}}
    finally:
        server.execute(f"DROP DATABASE {database} WITH (FORCE)")
        server.execute(f"DROP ROLE {role}")


@pytest.fixture
def tls_url(postgresql_server: PostgreSQLServer, postgresql_url: str, pki: PKI) -> Iterator[str]:
    """The shared server with TLS switched on (a reload), as a URL that verifies it."""
    server = postgresql_server
    for source, target in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key")):
        path = os.path.join(server.data_dir, target)
        shutil.copy(source, path)
        shutil.chown(path, "postgres", "postgres")
        os.chmod(path, 0o600)
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
        except conch.BackendUnavailable:  # not yet reloaded
            return False
    wait_until(serves_tls, 10.0, "TLS switched on")
    try:
        yield url
    finally:
        for name in settings:
            server.execute(f"ALTER SYSTEM RESET {name}")
        server.execute("SELECT pg_reload_conf()")


def test_groups_work_over_tls(postgresql_server: PostgreSQLServer, tls_url: str) -> None:
    with conch.connect(tls_url) as member, conch.connect(tls_url) as reader:
        member.group("over-tls").join({"tls": True})
        assert reader.group("over-tls").members() == {member.member_id: {"tls": True}}
        encrypted = postgresql_server.execute(
            "SELECT s.ssl FROM pg_stat_ssl AS s JOIN pg_stat_activity AS a ON a.pid = s.pid"
            " WHERE a.application_name = %s", f"conch {member.member_id}"[:63])
        assert encrypted and all(row == (True,) for row in encrypted), encrypted
        member.group("over-tls").leave()
    with pytest.raises(psycopg.OperationalError):  # the URL's checks are real
        psycopg.connect(postgresql_server.url_with(
            query="sslmode=verify-full&sslrootcert=/dev/null"))


def test_the_listener_listens_again_after_a_server_restart(
    postgresql_server: PostgreSQLServer, postgresql_url: str,
) -> None:
    def listening(watcher: conch.Coordinator) -> bool:
        rows = postgresql_server.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND query = %s", f"conch {watcher.member_id}"[:63], f"LISTEN {CHANNEL}")
        return rows == [(1,)]

    with conch.connect(postgresql_url) as watcher:
        watcher.group("listened").watch(lambda event: None)
        wait_until(lambda: listening(watcher), 10.0, "listening")
        postgresql_server.restart()
        wait_until(lambda: listening(watcher), 10.0, "listening again")


def test_a_member_frozen_past_the_idle_limit_leaves_and_comes_back_when_it_thaws(
    postgresql_server: PostgreSQLServer, postgresql_url: str,
) -> None:
    url = postgresql_server.url_with(query="heartbeat=0.5&connect_timeout=1")  # limit 4.5 s
    with conch.connect(postgresql_url) as reader, joined_worker(url, "frozen") as (worker, id_):
        members = reader.group("frozen").members
        worker.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        wait_until(lambda: id_ not in members(), 15.0, "the frozen member gone")
        gone = time.monotonic() - stopped
        assert gone > 3.0, f"gone after {gone:.2f} s: before the idle limit"
        worker.send_signal(signal.SIGCONT)
        wait_until(lambda: id_ in members(), 15.0, "the thawed member back")
    print(f"frozen member gone after {gone:.2f} s")
