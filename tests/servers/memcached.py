"""A real memcached 1.6 for the tests: ``memcached_server`` (session) and ``memcached_url``;
and one speaking only TLS, requiring client certificates of the test CA:
``memcached_tls_server`` (session) and ``memcached_tls_url``.

:func:`start_memcached` starts more of them for tests that break one (restart,
pause): never break the shared server without putting it back, though
``memcached_url`` restarts or resumes it if a test left it down.

A memcached that lost its state (a fresh one included) grants no conch lock
for one TTL (the restart grace period, see docs/memcached.md):
:func:`start_memcached` waits that out, so tests start on a settled server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import conch
from tests.servers.base import ServerProcess, require_binary
from tests.tls import PKI

SHORT_TTL = 3
"""The shared server's lock TTL (seconds): a killed holder's locks are free soon."""


class MemcachedProcess(ServerProcess):
    """One ``memcached`` on a free loopback port (64 MB, TCP only)."""

    def __init__(self, tls: PKI | None = None) -> None:
        self.tls = tls
        super().__init__("memcached", self._answers_version, start_timeout=15.0)

    @property
    def url(self) -> str:
        """``memcached://127.0.0.1:port`` (TLS: with the CA and client certificate options)."""
        if self.tls is None:
            return f"memcached://127.0.0.1:{self.port}"
        return (f"memcached://127.0.0.1:{self.port}?ssl_ca={self.tls.ca}"
                f"&ssl_cert={self.tls.client_cert}&ssl_key={self.tls.client_key}")


    def after_restart(self) -> None:
        """Wait out the restarted server's grace period (:meth:`settle`)."""
        self.settle()

    def command(self, line: bytes) -> bytes:
        """Send one text-protocol ``line`` and return the first reply line (tests' own use)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as plain:
            sock = plain if self.tls is None else self.tls.client_context().wrap_socket(
                plain, server_hostname="127.0.0.1")  # which takes plain's descriptor
            with sock, sock.makefile("rb") as replies:
                sock.sendall(line + b"\r\n")
                return replies.readline().rstrip(b"\r\n")

    def settle(self, ttl: float = SHORT_TTL) -> None:
        """Wait until the server grants conch locks (the grace period after it lost its state)."""
        separator = "&" if "?" in self.url else "?"
        with conch.connect(f"{self.url}{separator}ttl={int(ttl)}") as coordinator:
            lock = coordinator.lock("conch-tests-settle")
            if not lock.acquire(blocking=ttl + 10):
                raise RuntimeError(f"memcached on port {self.port} granted no lock in {ttl} s")
            lock.release()

    def _answers_version(self) -> bool:
        return self.command(b"version").startswith(b"VERSION ")


def start_memcached(settle: bool = True, tls: PKI | None = None) -> MemcachedProcess:
    """Start a fresh ``memcached`` (and, with ``settle``, wait out its grace period); with
    ``tls``, speaking only TLS with that PKI's server certificate, and requiring a client
    certificate it signed (``ssl_verify_mode=2``)."""
    binary = require_binary("memcached", "memcached")
    server = MemcachedProcess(tls)
    tls_arguments = [] if tls is None else [
        "-Z", "-o", f"ssl_chain_cert={tls.server_cert},ssl_key={tls.server_key},"
                    f"ssl_ca_cert={tls.ca},ssl_verify_mode=2"]
    server.start_on_free_ports(lambda: [binary, "-l", "127.0.0.1", "-p", str(server.port),
                                        "-U", "0", "-m", "64", "-u", "root", *tls_arguments])
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
    memcached_server.ensure_running()
    return f"{memcached_server.url}?ttl={SHORT_TTL}"


@pytest.fixture(scope="session")
def memcached_tls_server(pki: PKI) -> Iterator[MemcachedProcess]:
    """A TLS-only memcached shared by the whole test session (client certificates required)."""
    server = start_memcached(tls=pki)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def memcached_tls_url(memcached_tls_server: MemcachedProcess) -> str:
    """The TLS server's URL (CA and client certificate) with a short TTL."""
    memcached_tls_server.ensure_running()
    return f"{memcached_tls_server.url}&ttl={SHORT_TTL}"
