"""Three-member clusters on loopback, whose members tests kill and cut off; etcd's here,
ZooKeeper's in :mod:`tests.chaos.zookeeper_cluster`.

Members talk to each other through a :class:`~tests.chaos.proxy.Proxy` in front of
each member's peer ports: etcd members advertise the proxy as their peer URL, and
each ZooKeeper member's ``zoo.cfg`` names the other members at their proxies
(its own entry keeps the real ports it listens on). :meth:`Cluster.isolate` then
partitions one member from the others: its proxies hold every connection, and the
others' proxies hold the connections that member opened (found by PID). Clients
reach the members' client ports directly.
"""

from __future__ import annotations

import abc
import json
import threading
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

from tests.chaos.proxy import Proxy
from tests.chaos.sockets import connections
from tests.servers.base import ServerProcess, require_binary, wait_until

SIZE = 3


class Member(ServerProcess):
    """One member: its client port, its real peer ports and the proxies in front of them."""

    def __init__(self, kind: str, index: int, peer_ports: int) -> None:
        self.index = index
        super().__init__(f"{kind}-{index}", self.serving, start_timeout=60.0,
                         ports=1 + peer_ports)
        self.proxies = [Proxy(port) for port in self.peer_ports]

    @property
    def peer_ports(self) -> list[int]:
        """The peer ports the member listens on (the others reach them through its proxies)."""
        return self.ports[1:]

    def pick_ports(self) -> None:
        # The other members know this one by its proxies' ports, which stay.
        super().pick_ports()
        for proxy, port in zip(self.proxies, self.peer_ports, strict=True):
            proxy.upstream_port = port

    @abc.abstractmethod
    def serving(self) -> bool:
        """True when the member answers clients as part of a quorum."""

    @abc.abstractmethod
    def state(self) -> str:
        """What the member says of its role now, in a line."""

    def report(self) -> str:
        """The member's process, ports, role and last log lines, for a failure message."""
        try:
            state = self.state()
        except OSError as exc:
            state = f"no answer ({exc})"
        process = f"pid {self.pid}" if self.running else "not running"
        return (f"{self.name} ({process}, client port {self.port}, peer ports "
                f"{self.peer_ports} behind {[proxy.port for proxy in self.proxies]}): "
                f"{state}\n{self.log_tail(12)}")

    def cleanup(self) -> None:
        super().cleanup()
        for proxy in self.proxies:
            proxy.close()


class Cluster(abc.ABC):
    """Three members started together (a lone member waits for a quorum to answer)."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)

    def start(self) -> None:
        """Start every member; return once all serve."""
        failures: list[BaseException] = []

        def launch(member: Member) -> None:
            try:
                self.launch(member)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=launch, args=(m,)) for m in self.members]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            self.cleanup()
            raise failures[0]

    @abc.abstractmethod
    def launch(self, member: Member) -> None:
        """Start ``member``'s process (first start, on fresh data)."""

    @abc.abstractmethod
    def is_leader(self, member: Member) -> bool:
        """True when ``member`` leads the cluster now."""

    def leader(self, timeout: float = 30.0) -> Member:
        """The member leading the cluster (waits for an election to end)."""
        found: list[Member] = []

        def elected() -> bool:
            found[:] = [m for m in self.members if m.running and self.is_leader(m)]
            return len(found) == 1

        wait_until(elected, timeout, "a leader")
        return found[0]

    def endpoints(self, members: Sequence[Member] | None = None) -> str:
        """``host:port,...`` of the client ports of ``members`` (default: all)."""
        return ",".join(f"127.0.0.1:{m.port}" for m in (members or self.members))

    def isolate(self, member: Member) -> None:
        """Partition ``member`` from the others (clients still reach it)."""
        for proxy in member.proxies:
            proxy.partition()
        for other in self.members:
            if other is not member:
                for proxy in other.proxies:
                    proxy.partition(sources=[member.pid])

    def heal(self) -> None:
        """End every partition."""
        for member in self.members:
            for proxy in member.proxies:
                proxy.heal()

    def restore(self) -> None:
        """Heal, restart the members that were stopped, and wait until all serve."""
        self.heal()
        for member in self.members:
            if not member.running:
                member.start(member._argv)
        wait_until(lambda: all(m.serving() for m in self.members), 60, "every member")

    def report(self) -> str:
        """Every member's report and the connections between members, for a failure message."""
        pids = [member.pid for member in self.members if member.running]
        links = "\n".join(f"  {link}" for link in connections(pids))
        return "\n".join([*(member.report() for member in self.members),
                          f"connections of the members:\n{links}"])

    def cleanup(self) -> None:
        """Stop every member and remove its data."""
        for member in self.members:
            member.cleanup()


class EtcdMember(Member):
    """An etcd member: client port, one peer port (its proxy is the advertised peer URL)."""

    def serving(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as answer:
            return bool(json.load(answer).get("health") == "true")

    def state(self) -> str:
        status = self.status()
        role = "leader" if status["leader"] == status["header"]["member_id"] else "follower"
        return f"{role}, raft term {status.get('raftTerm')}, index {status.get('raftIndex')}"

    def status(self) -> dict[str, Any]:
        """The member's ``/v3/maintenance/status`` (its ID and its leader's, as strings)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/v3/maintenance/status",
                                         data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=1) as answer:
            status: dict[str, Any] = json.load(answer)
        return status


class EtcdCluster(Cluster):
    """Three etcd 3.4 members on loopback (no auth: the single-member tests cover it)."""

    def __init__(self) -> None:
        super().__init__([EtcdMember("etcd", index, 1) for index in range(SIZE)])
        self.token = f"chaos-{uuid.uuid4().hex}"

    def launch(self, member: Member) -> None:
        binary = require_binary("etcd", "etcd-server")
        peers = ",".join(f"n{m.index}=http://127.0.0.1:{m.proxies[0].port}" for m in self.members)

        def command() -> list[str]:
            client = f"http://127.0.0.1:{member.port}"
            return [
                binary, "--name", f"n{member.index}", "--data-dir", f"{member.data_dir}/member",
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", f"http://127.0.0.1:{member.peer_ports[0]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.proxies[0].port}",
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token,
                "--listen-metrics-urls", "", "--log-level", "warn", "--logger", "zap",
            ]

        member.start_on_free_ports(command)

    def is_leader(self, member: Member) -> bool:
        assert isinstance(member, EtcdMember)
        status = member.status()
        return bool(status["leader"] == status["header"]["member_id"])
