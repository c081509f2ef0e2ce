"""A real ZooKeeper 3.8 (Debian package ``zookeeper``): ``zookeeper_server`` and ``zookeeper_url``.

Each server runs standalone on a free loopback port with its data in a temp
directory. ``tickTime`` is 500 ms so tests may ask for session timeouts down to
1 s (ZooKeeper bounds a session timeout to 2 to 20 ticks unless told otherwise).
:func:`start_zookeeper` starts more of them for tests that break one (pause,
restart, wipe): never break the shared server. ``zookeeper_tls_server`` serves TLS on its
client port and requires a client certificate (``ssl.clientAuth=need``); it keeps a
plain port for the health check and the tests' own inspection.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient  # type: ignore[import-untyped]

from tests.servers.base import ServerProcess, require_binary
from tests.tls import KEY_PASSWORD, PKI

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
ZOOKEEPER_SCRIPT = "/usr/share/zookeeper/bin/zkServer.sh"  # shipped by the same package
# Without an SLF4J binding the server logs nothing; the simple one writes to the server log.
SLF4J_SIMPLE_JAR = "/usr/share/java/slf4j-simple.jar"
# TLS needs Netty's SslHandler (netty-handler, in zookeeper.jar's manifest), which needs
# netty-codec and netty-resolver, which the manifest leaves out.
NETTY_TLS_JARS = ("/usr/share/java/netty-codec.jar", "/usr/share/java/netty-resolver.jar")

ZOO_CFG = """\
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=60000
dataDir={data_dir}
clientPort={port}
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
forceSync={force_sync}
"""
# ZooKeeper 3.8 reads PEM key and trust stores; the key store holds the key and the chain.
TLS_CFG = """\
secureClientPort={secure_port}
secureClientPortAddress=127.0.0.1
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
ssl.keyStore.location={key_store}
ssl.keyStore.type=PEM
ssl.trustStore.location={ca}
ssl.trustStore.type=PEM
ssl.clientAuth={client_auth}
"""


def four_letter_word(port: int, word: str, timeout: float = 2.0) -> str:
    """Send a four-letter admin command to the server on ``port`` and return its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(word.encode("ascii"))
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("ascii", "replace")


class ZooKeeperServer(ServerProcess):
    """A standalone ZooKeeper on a free loopback port (stop/restart/pause from the base).

    Tests need no durability across power loss, and an fsync per write slows a
    loaded machine: ``durable=False`` turns ``forceSync`` off. Benchmarks keep it on,
    as in production.
    """

    def __init__(self, durable: bool = False, pki: PKI | None = None,
                 client_auth: str = "need") -> None:
        self.durable = durable
        self.pki = pki
        """With TLS: the certificates of the server and of the clients it trusts."""
        self.client_auth = client_auth
        """With TLS: ``ssl.clientAuth``, whether a client certificate is required (``need``),
        checked if given (``want``) or not asked for (``none``)."""
        super().__init__("zookeeper", self._serving, ports=1 if pki is None else 2)

    @property
    def plain_port(self) -> int:
        """The port that speaks plain ZooKeeper (with TLS: not the one clients use)."""
        return self.ports[-1]

    @property
    def hosts(self) -> str:
        """The ``host:port`` clients connect to (with TLS: the TLS port)."""
        return f"127.0.0.1:{self.port}"

    def url(self, chroot: str | None = None, credentials: str | None = None,
            **options: object) -> str:
        """A ``zookeeper://`` URL with a fresh chroot unless ``chroot`` is given;
        ``credentials`` is ``user:password``, ``options`` the query (``timeout=2``). With
        TLS it has the CA and the client certificate, its key encrypted."""
        path = chroot if chroot is not None else f"/conch-test-{uuid.uuid4().hex}"
        if self.pki is not None:
            options = {"use_ssl": "true", "ca": self.pki.ca, "certfile": self.pki.client_cert,
                       "keyfile": self.pki.encrypted_client_key,
                       "keyfile_password": KEY_PASSWORD, **options}
        query = "&".join(f"{name}={value}" for name, value in options.items())
        auth = f"{credentials}@" if credentials else ""
        return f"zookeeper://{auth}{self.hosts}{path}{'?' + query if query else ''}"

    def admin(self, credentials: str | None = None) -> KazooClient:
        """A started plain kazoo client, for the tests' own inspection (stop it after use)."""
        client = KazooClient(
            f"127.0.0.1:{self.plain_port}",
            auth_data=[("digest", credentials)] if credentials else None,
        )
        client.start(timeout=10)
        return client

    def launch(self) -> ZooKeeperServer:
        """Write ``zoo.cfg`` and start the server (about a second); return self."""
        java = require_binary("java", "default-jre-headless")
        require_binary(ZOOKEEPER_SCRIPT, "zookeeper")
        config = os.path.join(self.data_dir, "zoo.cfg")
        classpath = [self.data_dir, ZOOKEEPER_JAR]
        if os.path.exists(SLF4J_SIMPLE_JAR):
            classpath.append(SLF4J_SIMPLE_JAR)
        key_store = os.path.join(self.data_dir, "server-key-store.pem")
        if self.pki is not None:
            classpath += NETTY_TLS_JARS
            with open(key_store, "w") as out:
                for part in (self.pki.server_key, self.pki.server_cert):
                    with open(part) as pem:
                        out.write(pem.read())

        def command() -> list[str]:
            with open(config, "w") as out:
                out.write(ZOO_CFG.format(data_dir=self.data_dir, port=self.plain_port,
                                         force_sync="yes" if self.durable else "no"))
                if self.pki is not None:
                    out.write(TLS_CFG.format(secure_port=self.port, key_store=key_store,
                                             ca=self.pki.ca, client_auth=self.client_auth))
            return [
                java, "-Xmx256m", "-XX:+UseSerialGC",
                f"-Dzookeeper.log.dir={self.data_dir}",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", ":".join(classpath),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain", config,
            ]

        self.start_on_free_ports(command)
        return self

    def wipe(self) -> None:
        """Stop the server, delete its data (snapshots and logs) and start it again on the
        same ports: zxids start over, and every session is unknown."""
        self.stop()
        shutil.rmtree(os.path.join(self.data_dir, "version-2"), ignore_errors=True)
        self.ensure_running()

    def _serving(self) -> bool:
        # ``ruok`` answers ``imok`` as soon as the port is open, before the server
        # has loaded its data and serves clients; ``srvr`` then reports a mode.
        return (four_letter_word(self.plain_port, "ruok") == "imok"
                and "Mode: " in four_letter_word(self.plain_port, "srvr"))


def start_zookeeper() -> ZooKeeperServer:
    """Start a fresh ZooKeeper (the caller calls ``cleanup()``)."""
    return ZooKeeperServer().launch()


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """One ZooKeeper for the whole test session (do not pause or stop it in a test)."""
    server = ZooKeeperServer()
    try:
        yield server.launch()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def zookeeper_tls_server(pki: PKI) -> Iterator[ZooKeeperServer]:
    """One ZooKeeper serving TLS (client certificate required) for the whole session."""
    server = ZooKeeperServer(pki=pki)
    try:
        yield server.launch()
    finally:
        server.cleanup()


@pytest.fixture
def zookeeper_tls_url(zookeeper_tls_server: ZooKeeperServer) -> str:
    """A TLS URL (client certificate, encrypted key and its password) with credentials
    and a chroot of its own."""
    return zookeeper_tls_server.url(credentials=f"conch:pw-{uuid.uuid4().hex}")


@pytest.fixture
def zookeeper_url(zookeeper_server: ZooKeeperServer) -> str:
    """A URL with credentials (``digest``) and a chroot of its own, so each test sees
    only its own znodes and the suite checks the password never shows."""
    return zookeeper_server.url(credentials=f"conch:pw-{uuid.uuid4().hex}")
