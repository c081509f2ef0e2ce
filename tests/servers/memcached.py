"""A real memcached 1.6 for the tests: ``memcached_server`` (session) and ``memcached_url``.

:func:`start_memcached` starts more of them for tests that break one (restart,
pause): never break the shared server without putting it back, though
``memcached_url`` restarts or resumes it if a test left it down.

A memcached that lost its state (a fresh one included) grants no conch lock
for one TTL (the restart grace period, see :mod:`conch.backends.memcached`):
:func:`start_memcached` waits that out, so tests start on a settled server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import conch
from tests.servers.base import ServerProcess, require_binary

SHORT_TTL = 3
"""The shared server's lock TTL (seconds): a killed holder's locks are free soon."""


class MemcachedProcess(ServerProcess):
    """One ``memcached`` on a free loopback port (64 MB, TCP only)."""

    def __init__(self) -> None:
        super().__init__("memcached", self._answers_version, start_timeout=15.0)

    @property
    def url(self) -> str:
        """``memcached://127.0.0.1:port`` (no options)."""
        return f"memcached://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self, line: bytes) -> bytes:
        """Send one text-protocol ``line`` and return the first reply line (tests' own use)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(line + b"\r\n")
            return sock.makefile("rb").readline().rstrip(b"\r\n")

    def settle(self, ttl: float = SHORT_TTL) -> None:
        """Wait until the server grants conch locks (the grace period after it lost its state)."""
        with conch.connect(f"{self.url}?ttl={int(ttl)}") as coordinator:
            lock = coordinator.lock("conch-tests-settle")
            if not lock.acquire(blocking=ttl + 10):
                raise RuntimeError(f"memcached on port {self.port} granted no lock in {ttl} s")
            lock.release()

    def _answers_version(self) -> bool:
        return self.command(b"version").startswith(b"VERSION ")


def start_memcached(settle: bool = True) -> MemcachedProcess:
    """Start a fresh ``memcached`` (and, with ``settle``, wait out its grace period)."""
    binary = require_binary("memcached", "memcached")
    server = MemcachedProcess()
    server.start_on_free_ports(lambda: [binary, "-l", "127.0.0.1", "-p", str(server.port),
                                        "-U", "0", "-m", "64", "-u", "root"])
    if settle:
        server.settle()
    return server


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedProcess]:
    """A memcached server shared by the whole test session."""
    server = start_memcached()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def memcached_url(memcached_server: MemcachedProcess) -> str:
    """The shared server's URL with a short TTL; restarts or resumes the server if an earlier
    test left it down."""
    if memcached_server.running:
        memcached_server.resume()
    else:
        memcached_server.start(memcached_server._argv)
        memcached_server.settle()
    return f"{memcached_server.url}?ttl={SHORT_TTL}"
