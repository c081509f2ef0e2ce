"""The backends the chaos scenarios break: a server of their own each, and URLs with short leases.

The scenarios restart, pause and cut off servers, so they never use the servers
the other suites share: :class:`Servers` starts one per backend on first use and
stops them all at the end (by PID). Every URL sets short timeouts, so a
dead or cut-off holder's lock is free within seconds (:attr:`Target.lease`), and
carries a password where the backend takes one, so the scenarios also check
that no password shows in an error or a log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import uuid

from tests.chaos.proxy import Proxy
from tests.servers.base import ServerProcess
from tests.servers.etcd import start_etcd
from tests.servers.memcached import MemcachedProcess, start_memcached
from tests.servers.mysql import MySQLServer
from tests.servers.postgresql import PostgreSQLServer
from tests.servers.redis import start_redis
from tests.servers.zookeeper import start_zookeeper

SERVER_BACKENDS = ("redis", "etcd", "zookeeper", "postgresql", "mysql", "memcached")
"""The backends with a server to restart, pause or cut off."""

PROCESS_BACKENDS = ("file", *SERVER_BACKENDS)
"""The backends whose locks other processes share (memory:// lives in one process)."""

PASSWORD = f"chaos-secret-{uuid.uuid4().hex}"
"""The password of every chaos server that takes one (grepped for in logs and errors)."""

# The lease of each backend at the URLs below: seconds a holder that stopped renewing
# (frozen, cut off) keeps its lock. None: session-bound, the lock lives as long as the
# holder's connection, whatever the holder does (a frozen holder keeps it).
LEASES: dict[str, float | None] = {
    "memory": None,
    "file": None,
    "postgresql": None,
    "redis": 2.0,
    "etcd": 2.0,
    "zookeeper": 2.0,
    "mysql": 2.0,  # the server ends a session silent for session_timeout
    "memcached": 3.0,
}


def _options(backend: str, long_lease: bool) -> str:
    if long_lease:  # no renewal traffic for seconds, and a lock orphaned would stay so
        return {
            "redis": "ttl=30", "memcached": "ttl=30", "etcd": "ttl=30",
            "zookeeper": "timeout=20", "postgresql": "heartbeat=30",
            "mysql": "session_timeout=30",
        }[backend]
    return {
        "redis": "ttl=2&socket_timeout=0.5&connect_timeout=0.5",
        "memcached": "ttl=3&timeout=0.5&connect_timeout=0.5",
        "etcd": "ttl=2&timeout=1&connect_timeout=1",
        "zookeeper": "timeout=2&connect_timeout=2",
        "postgresql": "heartbeat=0.5&connect_timeout=1",
        "mysql": "session_timeout=2&connect_timeout=1",
    }[backend]


def server_url(backend: str, server: ServerProcess, port: int, namespace: str,
               long_lease: bool = False) -> str:
    """A URL for ``server`` reached at ``port`` (its own, or a proxy's), with short leases
    (or, with ``long_lease``, leases of half a minute)."""
    query = _options(backend, long_lease)
    if backend == "redis":
        return f"redis://:{PASSWORD}@127.0.0.1:{port}/0?{query}"
    if backend == "memcached":
        return f"memcached://127.0.0.1:{port}?{query}"
    if backend == "etcd":
        return f"etcd://root:{PASSWORD}@127.0.0.1:{port}/chaos-{namespace}?{query}"
    if backend == "zookeeper":
        return f"zookeeper://conch:{PASSWORD}@127.0.0.1:{port}/chaos-{namespace}?{query}"
    if backend == "postgresql":
        assert isinstance(server, PostgreSQLServer)
        return server.url_with(port=port, query=query)
    assert isinstance(server, MySQLServer)
    return server.url_with(port=port, query=query)


def start_server(backend: str) -> ServerProcess:
    """Start a server of ``backend`` for chaos alone (skips when it is not installed)."""
    if backend == "redis":
        return start_redis(password=PASSWORD)
    if backend == "memcached":
        return start_memcached()
    if backend == "etcd":
        return start_etcd(password=PASSWORD)
    if backend == "zookeeper":
        return start_zookeeper()
    if backend == "postgresql":
        postgresql = PostgreSQLServer()
        try:
            postgresql.initialise()
        except BaseException:
            postgresql.cleanup()
            raise
        return postgresql
    mysql = MySQLServer()
    try:
        mysql.initialise()
    except BaseException:
        mysql.cleanup()
        raise
    return mysql


def descendants(pid: int) -> list[int]:
    """The PIDs of every process below ``pid`` (children first)."""
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        for task in pathlib.Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                children = [int(child) for child in task.read_text().split()]
                found += children
                parents += children
    return found


def signal_each(pids: list[int], signum: signal.Signals) -> None:
    """Send ``signum`` to each of ``pids``; one that has exited since it was listed (a
    PostgreSQL session process ending) is skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


class Servers:
    """One chaos server per backend, started on first use; :meth:`cleanup` stops them all."""

    def __init__(self) -> None:
        self._started: dict[str, ServerProcess] = {}

    def get(self, backend: str) -> ServerProcess:
        """The running (and not paused) server of ``backend``."""
        server = self._started.get(backend)
        if server is None:
            server = self._started[backend] = start_server(backend)
        else:
            ensure_running(server)
        return server

    def cleanup(self) -> None:
        """Stop every server started here and remove its data."""
        for server in self._started.values():
            server.cleanup()
        self._started.clear()


def ensure_running(server: ServerProcess) -> None:
    """Thaw ``server`` if a scenario left it paused; start it if it left it stopped."""
    process = server._process
    if process is not None and process.poll() is None:
        signal_each([server.pid, *descendants(server.pid)], signal.SIGCONT)
    else:
        server.start(server._argv)
    if isinstance(server, MemcachedProcess):
        server.settle(LEASES["memcached"] or 0)


@dataclasses.dataclass
class Target:
    """One backend under test: its server (None for file:// and memory://, whose URL is
    ``local_url``) and URLs for one scenario.

    Every URL of one target shares a key prefix (a chroot on ZooKeeper), fresh per
    scenario, so that scenarios never see each other's locks.
    """

    backend: str
    server: ServerProcess | None
    local_url: str = ""
    namespace: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def lease(self) -> float | None:
        """Seconds a holder that stopped renewing keeps its lock (None: as long as its
        connection lives)."""
        return LEASES[self.backend]

    @property
    def port(self) -> int:
        """The server's client port."""
        assert self.server is not None
        return self.server.port

    def url(self, via: Proxy | None = None, long_lease: bool = False) -> str:
        """The URL of the backend, reached through ``via`` when given, with short leases
        unless ``long_lease``."""
        if self.server is None:
            return self.local_url
        return server_url(self.backend, self.server, via.port if via else self.port,
                          self.namespace, long_lease)

    def pause(self) -> None:
        """Freeze the server: every process of it (SIGSTOP), so nothing answers."""
        signal_each(self._server_pids(), signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a server frozen by :meth:`pause`."""
        signal_each(list(reversed(self._server_pids())), signal.SIGCONT)

    def _server_pids(self) -> list[int]:
        # PostgreSQL serves each session from a process the postmaster forked: freezing
        # the postmaster alone would only stop new connections.
        assert self.server is not None
        return [self.server.pid, *descendants(self.server.pid)]

    def proxy(self) -> Proxy:
        """A new proxy in front of the server (close it after use)."""
        return Proxy(self.port)

    @property
    def password(self) -> str | None:
        """The password in this target's URLs (None: the backend takes none)."""
        if isinstance(self.server, PostgreSQLServer | MySQLServer):
            return self.server.password
        return PASSWORD if self.backend in ("redis", "etcd", "zookeeper") else None
