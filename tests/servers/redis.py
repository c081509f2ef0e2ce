"""A real Redis 7 for the tests: ``redis_server`` (session) and ``redis_url``; and a
TLS-only one requiring client certificates of the test CA: ``redis_tls_server`` (session)
and ``redis_tls_url``.

:func:`start_redis` starts more of them for tests that break one (restart,
pause, a password, a replica): never break the shared server without putting
it back, though ``redis_url`` restarts or resumes it if a test left it down.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator, Sequence

import pytest
import redis

from tests.servers.base import ServerProcess, require_binary
from tests.tls import PKI

SHORT_TTL = 3


class RedisProcess(ServerProcess):
    """One ``redis-server`` (or ``redis-sentinel``) on a free loopback port."""

    def __init__(self, name: str = "redis", password: str | None = None,
                 tls: PKI | None = None, username: str | None = None) -> None:
        self.password = password
        self.username = username
        self.tls = tls
        super().__init__(name, self._answers_ping, start_timeout=15.0)

    @property
    def url(self) -> str:
        """``redis[s]://[[user]:password@]127.0.0.1:port`` (TLS: the client certificate's
        options too)."""
        auth = f"{self.username or ''}:{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}"
        return f"rediss://{auth}127.0.0.1:{self.port}?{tls_query(self.tls)}"


    def admin(self) -> redis.Redis:
        """A plain redis-py client, for the tests' own inspection (INFO, CONFIG, DEBUG)."""
        pki = self.tls
        return redis.Redis(host="127.0.0.1", port=self.port, username=self.username,
                           password=self.password, socket_timeout=5, socket_connect_timeout=5,
                           ssl=pki is not None, ssl_ca_certs=pki.ca if pki else None,
                           ssl_certfile=pki.client_cert if pki else None,
                           ssl_keyfile=pki.client_key if pki else None)

    def _answers_ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as plain:
            sock = plain if self.tls is None else self.tls.client_context().wrap_socket(
                plain, server_hostname="127.0.0.1")
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
        # A server with a password refuses the PING, but it answers: it is up.
        return reply.startswith((b"+PONG", b"-NOAUTH"))


def tls_query(pki: PKI) -> str:
    """The ``ssl_*`` options of a URL that trusts the test CA and shows the client
    certificate."""
    return (f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}"
            f"&ssl_keyfile={pki.client_key}")


def tls_arguments(pki: PKI) -> list[str]:
    """The ``tls-*`` settings of a server (or sentinel) with the test PKI's certificate, which
    requires clients (replicas and sentinels too) to show a certificate of the test CA."""
    return ["--tls-cert-file", pki.server_cert, "--tls-key-file", pki.server_key,
            "--tls-ca-cert-file", pki.ca, "--tls-auth-clients", "yes"]


def start_redis(*extra: str, password: str | None = None, name: str = "redis",
                tls: PKI | None = None, username: str | None = None) -> RedisProcess:
    """Start a fresh ``redis-server`` without persistence; ``extra`` are more arguments.

    With ``tls`` its only port is a TLS port with that PKI's certificate
    (:func:`tls_arguments`). ``username`` is the user of :meth:`RedisProcess.admin` and
    :attr:`RedisProcess.url`; ``extra`` must create it (``--user``).
    """
    binary = require_binary("redis-server", "redis-server")
    server = RedisProcess(name, password, tls, username)

    def command() -> Sequence[str]:
        port = (["--port", "0", "--tls-port", str(server.port), *tls_arguments(tls)] if tls
                else ["--port", str(server.port)])
        return [
            binary, "--bind", "127.0.0.1", *port, "--dir", server.data_dir,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            *(["--requirepass", password] if password and not username else []), *extra,
        ]

    server.start_on_free_ports(command)
    return server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """A Redis server shared by the whole test session, with a password (``requirepass``)."""
    server = start_redis(password=f"pw-{uuid.uuid4().hex}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The shared server's URL, with a short TTL so that the locks of a killed holder are free
    soon; restarts or resumes the server if an earlier test left it down."""
    redis_server.ensure_running()
    return f"{redis_server.url}/0?ttl={SHORT_TTL}"


@pytest.fixture(scope="session")
def redis_tls_server(pki: PKI) -> Iterator[RedisProcess]:
    """A TLS-only Redis shared by the whole test session: the test CA's server certificate,
    client certificates required, and a password."""
    server = start_redis(password=f"pw-{uuid.uuid4().hex}", tls=pki, name="redis-tls")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_tls_url(redis_tls_server: RedisProcess) -> str:
    """The TLS server's ``rediss://`` URL (CA and client certificate), short TTL."""
    redis_tls_server.ensure_running()
    return f"{redis_tls_server.url}&ttl={SHORT_TTL}"
