"""A real ZooKeeper 3.8 (Debian package ``zookeeper``): ``zookeeper_server`` and ``zookeeper_url``.

Each server runs standalone on a free loopback port with its data in a temp
directory. ``tickTime`` is 500 ms so tests may ask for session timeouts down to
1 s (ZooKeeper bounds a session timeout to 2 to 20 ticks unless told otherwise).
:func:`start_zookeeper` starts more of them for tests that break one (pause,
restart): never break the shared server.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient  # type: ignore[import-untyped]

from tests.servers.base import ServerProcess, require_binary

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
ZOOKEEPER_SCRIPT = "/usr/share/zookeeper/bin/zkServer.sh"  # shipped by the same package
# Without an SLF4J binding the server logs nothing; the simple one writes to the server log.
SLF4J_SIMPLE_JAR = "/usr/share/java/slf4j-simple.jar"

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

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        super().__init__("zookeeper", self._serving)

    @property
    def hosts(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    def url(self, chroot: str | None = None, credentials: str | None = None,
            **options: float) -> str:
        """A ``zookeeper://`` URL with a fresh chroot unless ``chroot`` is given;
        ``credentials`` is ``user:password``, ``options`` the query (``timeout=2``)."""
        path = chroot if chroot is not None else f"/conch-test-{uuid.uuid4().hex}"
        query = "&".join(f"{name}={value}" for name, value in options.items())
        auth = f"{credentials}@" if credentials else ""
        return f"zookeeper://{auth}{self.hosts}{path}{'?' + query if query else ''}"

    def admin(self, credentials: str | None = None) -> KazooClient:
        """A started plain kazoo client, for the tests' own inspection (stop it after use)."""
        client = KazooClient(
            self.hosts, auth_data=[("digest", credentials)] if credentials else None
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

        def command() -> list[str]:
            with open(config, "w") as out:
                out.write(ZOO_CFG.format(data_dir=self.data_dir, port=self.port,
                                         force_sync="yes" if self.durable else "no"))
            return [
                java, "-Xmx256m", "-XX:+UseSerialGC",
                f"-Dzookeeper.log.dir={self.data_dir}",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", ":".join(classpath),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain", config,
            ]

        self.start_on_free_ports(command)
        return self

    def _serving(self) -> bool:
        # ``ruok`` answers ``imok`` as soon as the port is open, before the server
        # has loaded its data and serves clients; ``srvr`` then reports a mode.
        return (four_letter_word(self.port, "ruok") == "imok"
                and "Mode: " in four_letter_word(self.port, "srvr"))


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


@pytest.fixture
def zookeeper_url(zookeeper_server: ZooKeeperServer) -> str:
    """A URL with credentials (``digest``) and a chroot of its own, so each test sees
    only its own znodes and the suite checks the password never shows."""
    return zookeeper_server.url(credentials=f"conch:pw-{uuid.uuid4().hex}")
