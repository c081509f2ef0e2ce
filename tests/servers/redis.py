"""A real Redis 7 for the tests: ``redis_server`` (session) and ``redis_url``.

:func:`start_redis` starts more of them for tests that break one (restart,
pause, a password, a replica): never break the shared server without putting
it back, though ``redis_url`` restarts or resumes it if a test left it down.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator, Sequence

import pytest
import redis

from tests.servers.base import ServerProcess, require_binary

SHORT_TTL = 3


class RedisProcess(ServerProcess):
    """One ``redis-server`` (or ``redis-sentinel``) on a free loopback port."""

    def __init__(self, name: str = "redis", password: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.password = password
        self.tls = tls
        super().__init__(name, self._answers_ping, start_timeout=15.0)

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def admin(self) -> redis.Redis:
        """A plain redis-py client, for the tests' own inspection (INFO, CONFIG, DEBUG)."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=5, socket_connect_timeout=5)

    def _answers_ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as plain:
            sock = self.tls.wrap_socket(plain, server_hostname="127.0.0.1") if self.tls else plain
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
        # A server with a password refuses the PING, but it answers: it is up.
        return reply.startswith((b"+PONG", b"-NOAUTH"))


def start_redis(*extra: str, password: str | None = None, name: str = "redis",
                tls: ssl.SSLContext | None = None) -> RedisProcess:
    """Start a fresh ``redis-server`` without persistence; ``extra`` are more arguments.

    With ``tls`` (the client context the readiness check uses) the port is a TLS port:
    ``extra`` must name the certificate files.
    """
    binary = require_binary("redis-server", "redis-server")
    server = RedisProcess(name, password, tls)

    def command() -> Sequence[str]:
        port = (["--port", "0", "--tls-port", str(server.port)] if tls
                else ["--port", str(server.port)])
        return [
            binary, "--bind", "127.0.0.1", *port, "--dir", server.data_dir,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            *(["--requirepass", password] if password else []), *extra,
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
    if redis_server.running:
        redis_server.resume()
    else:
        redis_server.start(redis_server._argv)
    return f"{redis_server.url}/0?ttl={SHORT_TTL}"
