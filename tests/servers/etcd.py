"""A real etcd 3.4 (Debian package ``etcd-server``) for the tests: ``etcd_server``, ``etcd_url``.

One member on free loopback ports (client and peer), data in a temp directory.
The shared server has auth enabled (user ``root`` with a random password), so
every test also runs through etcd's auth tokens. ``etcd_tls_server`` serves TLS
only and requires a client certificate (``--client-cert-auth``), with auth on too.
:func:`start_etcd` starts more servers for tests that break one (kill, pause,
wipe): never leave the shared server broken, though ``etcd_url`` restarts or
resumes it if a test did.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers.base import ServerProcess, require_binary
from tests.tls import PKI

SHORT_TTL = 3
"""The lease TTL of ``etcd_url``: the locks of a killed holder are free after it."""


class EtcdServer(ServerProcess):
    """One etcd member on a free client port and a free peer port."""

    def __init__(self, password: str | None = None, pki: PKI | None = None) -> None:
        self.password = password
        """The password of user ``root`` once auth is enabled (``None``: no auth)."""
        self.pki = pki
        """With TLS: the certificates of the server and of the clients it trusts."""
        super().__init__("etcd", self._healthy, start_timeout=20.0, ports=2)

    @property
    def peer_port(self) -> int:
        """The port of the peer API (no other member uses it)."""
        return self.ports[1]

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port`` of the client API (gRPC and the JSON gateway)."""
        return f"127.0.0.1:{self.port}"


    def url(self, prefix: str | None = None, **options: object) -> str:
        """An ``etcd://`` URL (``etcd+https://`` with the client certificate under TLS; as
        root when auth is on) with a fresh key prefix unless ``prefix`` is given;
        ``options`` become its query."""
        auth = f"root:{self.password}@" if self.password else ""
        path = prefix if prefix is not None else f"/conch-test-{uuid.uuid4().hex}"
        scheme = "etcd"
        if self.pki is not None:
            scheme = "etcd+https"
            options = {"ssl_ca": self.pki.ca, "ssl_cert": self.pki.client_cert_without_cn,
                       "ssl_key": self.pki.client_key_without_cn, **options}
        query = "&".join(f"{name}={value}" for name, value in options.items())
        return f"{scheme}://{auth}{self.endpoint}{path}{'?' + query if query else ''}"

    def call(self, path: str, body: dict[str, object]) -> dict[str, Any]:
        """POST to the JSON gateway as root (the tests' own inspection); etcd's answer."""
        headers = {}
        if self.password and path != "/v3/auth/authenticate":
            token = self.call("/v3/auth/authenticate", {"name": "root", "password": self.password})
            headers["Authorization"] = str(token["token"])
        request = urllib.request.Request(
            f"{self._base}{path}", data=json.dumps(body).encode(), method="POST",
            headers=headers,
        )
        with urllib.request.urlopen(request, timeout=5, context=self._context()) as response:
            answer: dict[str, Any] = json.load(response)
        return answer

    @property
    def _base(self) -> str:
        return f"{'http' if self.pki is None else 'https'}://{self.endpoint}"

    def _context(self) -> ssl.SSLContext | None:
        if self.pki is None:
            return None
        context = ssl.create_default_context(cafile=self.pki.ca)
        context.load_cert_chain(self.pki.client_cert_without_cn, self.pki.client_key_without_cn)
        return context

    def lease_ids(self) -> set[int]:
        """The IDs of every lease the server holds."""
        return {int(lease["ID"]) for lease in self.call("/v3/lease/leases", {}).get("leases", [])}

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``."""
        start = prefix.encode()
        end = start[:-1] + bytes([start[-1] + 1])
        answer = self.call("/v3/kv/range", {"key": _b64(start), "range_end": _b64(end),
                                            "keys_only": True})
        return [base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs", [])]

    def launch(self, *extra: str) -> EtcdServer:
        """Start the member (a new cluster in ``data_dir``; ``extra`` are more flags)."""
        binary = require_binary("etcd", "etcd-server")

        tls: list[str] = []
        if self.pki is not None:
            tls = ["--cert-file", self.pki.server_cert, "--key-file", self.pki.server_key,
                   "--trusted-ca-file", self.pki.ca, "--client-cert-auth"]

        def command() -> list[str]:
            client = f"{'http' if self.pki is None else 'https'}://127.0.0.1:{self.port}"
            peer = f"http://127.0.0.1:{self.peer_port}"
            return [
                binary, "--name", "n1", "--data-dir", f"{self.data_dir}/member",
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"n1={peer}", "--initial-cluster-state", "new",
                "--listen-metrics-urls", "", "--log-level", "warn", "--logger", "zap", *tls, *extra,
            ]

        self.start_on_free_ports(command)
        if self.password:
            self._enable_auth()
        return self

    def _enable_auth(self) -> None:
        # etcd enables auth only once user root exists with role root (etcd docs, "Role
        # based access control": enabling authentication).
        password, self.password = self.password, None  # no token before auth is on
        self.call("/v3/auth/role/add", {"name": "root"})
        self.call("/v3/auth/user/add", {"name": "root", "password": password})
        self.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.call("/v3/auth/enable", {})
        self.password = password

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self._base}/health", timeout=1,
                                    context=self._context()) as response:
            return bool(json.load(response).get("health") == "true")


def start_etcd(password: str | None = None) -> EtcdServer:
    """A fresh etcd member, with auth when ``password`` is given (stop it with ``cleanup()``)."""
    return EtcdServer(password).launch()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd with auth enabled for the whole test session."""
    server = EtcdServer(password=f"pw-{uuid.uuid4().hex}")
    try:
        yield server.launch()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def etcd_tls_server(pki: PKI) -> Iterator[EtcdServer]:
    """One etcd serving TLS only, requiring a client certificate, with auth enabled."""
    server = EtcdServer(password=f"pw-{uuid.uuid4().hex}", pki=pki)
    try:
        yield server.launch()
    finally:
        server.cleanup()


@pytest.fixture
def etcd_tls_url(etcd_tls_server: EtcdServer) -> str:
    """An ``etcd+https://`` URL with the client certificate, a key prefix of its own and
    a short lease TTL."""
    return etcd_tls_server.url(ttl=SHORT_TTL)


@pytest.fixture
def etcd_url(etcd_server: EtcdServer) -> str:
    """A URL with a key prefix of its own and a short lease TTL; restarts or resumes the
    shared server if an earlier test left it down."""
    etcd_server.ensure_running()
    return etcd_server.url(ttl=SHORT_TTL)
