"""A real MariaDB 10.11 for the tests: ``mysql_server`` (session), ``mysql_url`` and
``mysql_tls_url``.

The data directory is initialised once per test session (``mariadb-install-db``,
about 2 s). ``root`` logs in only over the Unix socket (``unix_socket``
authentication), which the harness uses to administer the server; the tests
connect over TCP as ``conch`` with a password, so a wrong password is a real
refusal by the server. The server also speaks TLS with a certificate of a test CA
(:attr:`MySQLServer.tls`: the session's ``pki``, else one of its own) and checks client
certificates against that CA; user ``conch_tls`` must use TLS (``REQUIRE SSL``), and
``conch_cert`` a client certificate that CA issued (``REQUIRE ISSUER``).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator

import pymysql  # type: ignore[import-untyped]
import pytest

from tests.servers.base import ServerProcess, require_binary
from tests.tls import PKI, make_pki

USER = "conch"
TLS_USER = "conch_tls"
CERTIFICATE_USER = "conch_cert"
DATABASE = "conch"


class MySQLServer(ServerProcess):
    """One ``mariadbd`` on a free loopback port, its data in a temp dir."""

    def __init__(self, durable: bool = False, tls: PKI | None = None,
                 speaks_tls: bool = True) -> None:
        """``durable``: flush InnoDB's log at each commit, as a production server does
        (tests skip it for speed; benchmarks need it, since each acquire commits a token).
        ``tls``: the certificates (default: a PKI of its own, made by :meth:`initialise`);
        without ``speaks_tls`` the server has none and offers no TLS."""
        self.durable = durable
        self._tls = tls
        self.speaks_tls = speaks_tls
        # Characters that must be percent-encoded in a URL: the tests prove they survive.
        self.password = f"p@ss:w/rd-{uuid.uuid4().hex}"
        super().__init__("mysql", self._answers_ping)
        self.datadir = os.path.join(self.data_dir, "data")
        self.socket = os.path.join(self.data_dir, "sock")

    @property
    def tls(self) -> PKI:
        """The server's certificates and the client certificates it accepts."""
        if self._tls is None:
            self._tls = make_pki(pathlib.Path(self.data_dir) / "pki")
        return self._tls

    @property
    def url(self) -> str:
        """The URL tests use: user ``conch`` with its password, database ``conch``."""
        return self.url_with()

    def url_with(self, password: str | None = None, port: int | None = None,
                 database: str = DATABASE, query: str = "", user: str = USER) -> str:
        """:attr:`url` with another password, port, database, query string or user."""
        secret = urllib.parse.quote(self.password if password is None else password, safe="")
        return (f"mysql://{user}:{secret}@127.0.0.1:{port or self.port}/{database}"
                f"{'?' + query if query else ''}")

    def initialise(self) -> None:
        """Create the data directory, start the server, create the test user and database."""
        installed = subprocess.run(
            ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            capture_output=True, check=False,
        )
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {installed.stdout.decode()} "
                               f"{installed.stderr.decode()}")
        tls_arguments = [
            f"--ssl-cert={self.tls.server_cert}", f"--ssl-key={self.tls.server_key}",
            f"--ssl-ca={self.tls.ca}"] if self.speaks_tls else []
        self.start_on_free_ports(lambda: [
            "mariadbd", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
            "--bind-address=127.0.0.1", f"--port={self.port}", f"--socket={self.socket}",
            "--skip-name-resolve",
            # A test server: durability across an OS crash is not what the tests check.
            f"--innodb-flush-log-at-trx-commit={1 if self.durable else 2}",
            "--innodb-buffer-pool-size=32M", "--max-connections=300",
            *tls_arguments,
        ])
        self.create_database(DATABASE)
        self.execute(
            f"CREATE USER '{TLS_USER}'@'127.0.0.1' IDENTIFIED BY '{self.password}' REQUIRE SSL",
            f"GRANT ALL ON `{DATABASE}`.* TO '{TLS_USER}'@'127.0.0.1'",
            f"CREATE USER '{CERTIFICATE_USER}'@'127.0.0.1' IDENTIFIED BY '{self.password}' "
            f"REQUIRE ISSUER '/CN=conch test ca'",
            f"GRANT ALL ON `{DATABASE}`.* TO '{CERTIFICATE_USER}'@'127.0.0.1'",
        )

    def create_database(self, name: str) -> None:
        """Create database ``name`` (if missing) and let the test user use it, over TCP
        (``127.0.0.1``) and over the Unix socket (``localhost``)."""
        statements = [f"CREATE DATABASE IF NOT EXISTS `{name}`"]
        for host in ("127.0.0.1", "localhost"):
            statements += [
                f"CREATE USER IF NOT EXISTS '{USER}'@'{host}' IDENTIFIED BY '{self.password}'",
                f"GRANT ALL ON `{name}`.* TO '{USER}'@'{host}'",
            ]
        self.execute(*statements)

    def execute(self, *statements: str) -> list[tuple[object, ...]]:
        """Run ``statements`` as root over the socket; the rows of the last one."""
        admin = pymysql.connect(unix_socket=self.socket, user="root", autocommit=True)
        try:
            with admin.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                return list(cursor.fetchall())
        finally:
            admin.close()


    def _answers_ping(self) -> bool:
        ping = subprocess.run(["mariadb-admin", "--no-defaults", "-S", self.socket, "ping"],
                              capture_output=True, check=False)
        return ping.returncode == 0


@pytest.fixture(scope="session")
def mysql_server(pki: PKI) -> Iterator[MySQLServer]:
    """A MariaDB server shared by the whole test session (TLS with the session's ``pki``)."""
    for binary in ("mariadbd", "mariadb-install-db", "mariadb-admin"):
        require_binary(binary, "mariadb-server")
    server = MySQLServer(tls=pki)
    try:
        server.initialise()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def mysql_url(mysql_server: MySQLServer) -> str:
    """The server's URL; restarts the server if an earlier test left it stopped or paused."""
    mysql_server.ensure_running()
    return mysql_server.url


@pytest.fixture
def mysql_tls_url(mysql_url: str, mysql_server: MySQLServer) -> str:
    """The shared server over TLS, as the user that needs a client certificate
    (``REQUIRE ISSUER``): the test CA and its client certificate."""
    pki = mysql_server.tls
    query = f"ssl_ca={pki.ca}&ssl_cert={pki.client_cert}&ssl_key={pki.client_key}"
    return mysql_server.url_with(user=CERTIFICATE_USER, query=query)
