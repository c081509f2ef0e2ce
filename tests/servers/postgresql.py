"""A real PostgreSQL 15 for the tests: ``postgresql_server`` (session) and ``postgresql_url``.

PostgreSQL refuses to run as root, so ``initdb`` and ``postgres`` run as the
``postgres`` user through ``setpriv``, which execs: the PID we hold is the
postmaster's own. The tests connect over TCP as role ``conch`` with a password
checked by SCRAM (``pg_hba.conf``), so a wrong password is a real refusal; the
harness itself administers the server as ``postgres`` over the Unix socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.servers.base import ServerProcess, require_binary

BIN_DIR = "/usr/lib/postgresql/15/bin"
USER = "conch"
DATABASE = "conch"

# The test role always logs in with a password (SCRAM); the harness administers
# as the superuser over the socket, and roles a test creates connect over TCP,
# without one.
PG_HBA = f"""\
local all postgres trust
local all {USER} scram-sha-256
host all {USER} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


class PostgreSQLServer(ServerProcess):
    """One postmaster on a free loopback port, its data in a temp dir owned by ``postgres``."""

    def __init__(self, durable: bool = False) -> None:
        """``durable``: keep ``fsync`` on (benchmarks); tests turn it off for speed."""
        self.durable = durable
        self.password = f"pw-{uuid.uuid4().hex}"
        super().__init__("postgresql", self._accepts_connections)
        self.pgdata = os.path.join(self.data_dir, "pgdata")
        shutil.chown(self.data_dir, "postgres", "postgres")

    @property
    def url(self) -> str:
        """The URL tests use: role ``conch`` with its password, database ``conch``."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def url_with(self, password: str | None = None, port: int | None = None,
                 query: str = "", host: str = "127.0.0.1") -> str:
        """:attr:`url` with another password, port, query string or host."""
        secret = self.password if password is None else password
        return (f"postgresql://{USER}:{secret}@{host}:{port or self.port}/{DATABASE}"
                f"{'?' + query if query else ''}")

    def initialise(self) -> None:
        """Create the cluster, start it, and create the test role and database."""
        _as_postgres([f"{BIN_DIR}/initdb", "-D", self.pgdata, "-U", "postgres",
                      "--auth=trust", "--no-sync", "--no-instructions"])
        with open(os.path.join(self.pgdata, "pg_hba.conf"), "w") as hba:
            hba.write(PG_HBA)
        # Tests do not check durability across an OS crash: fsync only costs them time.
        durability = [] if self.durable else ["-c", "fsync=off"]
        self.start_on_free_ports(lambda: _setpriv_argv([
            f"{BIN_DIR}/postgres", "-D", self.pgdata, "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.data_dir}",
            "-c", "max_connections=200",
            *durability,
        ]))
        with self.admin() as admin:
            admin.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{self.password}'")
            admin.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection over the Unix socket (autocommit)."""
        return psycopg.connect(host=self.data_dir, port=self.port, user="postgres",
                               dbname=dbname, autocommit=True)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        """Stop by PID. SIGINT is PostgreSQL's *fast* shutdown: SIGTERM ("smart") would wait
        for every client to disconnect."""
        super().stop(sig, timeout)

    def execute(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Run ``sql`` as the superuser in the test database; its rows (if any)."""
        with self.admin(DATABASE) as admin:
            cursor = admin.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []



    def _accepts_connections(self) -> bool:
        ready = subprocess.run(
            [f"{BIN_DIR}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return ready.returncode == 0


def _setpriv_argv(argv: list[str]) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]


def _as_postgres(argv: list[str]) -> None:
    done = subprocess.run(_setpriv_argv(argv), capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stdout.decode()} {done.stderr.decode()}")


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgreSQLServer]:
    """A PostgreSQL server shared by the whole test session."""
    require_binary(f"{BIN_DIR}/postgres", "postgresql")
    require_binary("setpriv", "util-linux")
    server = PostgreSQLServer()
    try:
        server.initialise()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgresql_url(postgresql_server: PostgreSQLServer) -> str:
    """The server's URL; restarts the server if an earlier test left it stopped or paused."""
    postgresql_server.ensure_running()
    return postgresql_server.url
