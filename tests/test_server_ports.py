"""The test servers start even when another process takes a port picked for them first.

:func:`tests.servers.base.free_port` is made to hand out, once, a port a socket here
listens on, and answers on as the server would: the server must not take that
stranger for itself, and must start on new ports.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.chaos.clusters import Cluster, EtcdCluster
from tests.chaos.zookeeper_cluster import ZooKeeperCluster
from tests.servers import base
from tests.servers.base import ADDRESS_IN_USE, ServerProcess, listens
from tests.servers.etcd import start_etcd
from tests.servers.memcached import start_memcached
from tests.servers.mysql import MySQLServer
from tests.servers.postgresql import PostgreSQLServer
from tests.servers.redis import start_redis
from tests.servers.zookeeper import start_zookeeper


class Stranger:
    """A listening socket on a free port that answers every connection with ``reply``."""

    def __init__(self, reply: bytes) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._reply = reply
        self._thread = threading.Thread(target=self._answer, daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def _answer(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with client, contextlib.suppress(OSError):
                client.sendall(self._reply)


@pytest.fixture
def stranger(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Stranger]]:
    """``stranger(reply, pick=0, times=1)``: a :class:`Stranger` whose port ``free_port``
    hands out at its ``pick``-th call (counting from 0), ``times`` calls in a row."""
    strangers: list[Stranger] = []

    def take(reply: bytes = b"", pick: int = 0, times: int = 1) -> Stranger:
        held = Stranger(reply)
        strangers.append(held)
        real = base.free_port
        calls = iter(range(1_000_000))

        def free_port() -> int:
            return held.port if pick <= next(calls) < pick + times else real()

        monkeypatch.setattr(base, "free_port", free_port)
        return held

    yield take
    for held in strangers:
        held.close()


def _postgresql() -> ServerProcess:
    server = PostgreSQLServer()
    try:
        server.initialise()
    except BaseException:
        server.cleanup()
        raise
    return server


def _mysql() -> ServerProcess:
    server = MySQLServer()
    try:
        server.initialise()
    except BaseException:
        server.cleanup()
        raise
    return server


HTTP_HEALTHY = b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"health":"true"}'

STARTS: dict[str, tuple[Callable[[], ServerProcess], bytes, int]] = {
    # name: (start a server, what the stranger answers, which free_port call it takes)
    "redis": (start_redis, b"+PONG\r\n", 0),
    "memcached": (lambda: start_memcached(settle=False), b"VERSION 1.6.0\r\n", 0),
    "etcd-client-port": (start_etcd, HTTP_HEALTHY, 0),
    "etcd-peer-port": (start_etcd, b"", 1),
    "zookeeper": (start_zookeeper, b"imok", 0),
    "postgresql": (_postgresql, b"", 0),
    "mysql": (_mysql, b"", 0),
}


@pytest.mark.parametrize("name", STARTS)
def test_a_server_starts_on_new_ports_when_its_port_was_taken(
        name: str, stranger: Callable[..., Stranger]) -> None:
    start, reply, pick = STARTS[name]
    held = stranger(reply, pick)
    server = start()
    try:
        assert held.port not in server.ports
        assert listens(server.pid, server.port)
        # The first start did fail on the taken port: the retry was needed.
        assert ADDRESS_IN_USE in server.log_tail(lines=10_000).lower()
    finally:
        server.cleanup()


@pytest.mark.parametrize("make", [EtcdCluster, ZooKeeperCluster])
def test_a_cluster_member_starts_on_new_ports_when_a_peer_port_was_taken(
        make: Callable[[], Cluster], stranger: Callable[..., Stranger]) -> None:
    # The first member's ports are picked first: its client port, then its peer ports.
    # The others reach the member through its proxies, which must follow the new ports.
    held = stranger(pick=2 if make is ZooKeeperCluster else 1)  # ZooKeeper: election port
    cluster = make()
    cluster.start()
    try:
        first = cluster.members[0]
        assert held.port not in first.ports
        assert [proxy.upstream_port for proxy in first.proxies] == first.ports[1:]
        assert ADDRESS_IN_USE in first.log_tail(lines=10_000).lower()
        cluster.leader()
    finally:
        cluster.cleanup()


def test_a_restart_keeps_the_port() -> None:
    server = start_redis()
    try:
        port = server.port
        server.restart()
        assert server.port == port and listens(server.pid, port)
    finally:
        server.cleanup()


def test_a_port_taken_at_every_start_fails_clearly(stranger: Callable[..., Stranger]) -> None:
    held = stranger(b"+PONG\r\n", times=base.START_TRIES)
    with pytest.raises(RuntimeError) as failure:
        start_redis()
    message = str(failure.value)
    assert f"{base.START_TRIES} starts in a row" in message
    assert f"127.0.0.1:{held.port}" in message and ADDRESS_IN_USE in message.lower()
