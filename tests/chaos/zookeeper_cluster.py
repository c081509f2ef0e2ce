"""A three-member ZooKeeper cluster on loopback, whose members tests kill and cut off."""

from __future__ import annotations

import os

from tests.chaos.clusters import SIZE, Cluster, Member
from tests.chaos.sockets import Severance
from tests.servers.base import require_binary
from tests.servers.zookeeper import (
    SLF4J_SIMPLE_JAR,
    ZOO_CFG,
    ZOOKEEPER_JAR,
    ZOOKEEPER_SCRIPT,
    four_letter_word,
)


class ZooKeeperMember(Member):
    """A ZooKeeper member: client port; quorum and election ports, each behind a proxy."""

    def serving(self) -> bool:
        return four_letter_word(self.port, "srvr").count("Mode: ") == 1 and \
            "Mode: standalone" not in four_letter_word(self.port, "srvr")

    def state(self) -> str:
        answer = four_letter_word(self.port, "srvr").splitlines()
        facts = [line for line in answer if line.startswith(("Mode:", "Zxid:"))]
        return ", ".join(facts or answer[:1]) or "no answer"


# The single server's settings, and how long a follower may lag (in ticks of 500 ms).
CLUSTER_CFG = ZOO_CFG + "initLimit=10\nsyncLimit=4\n"


class ZooKeeperCluster(Cluster):
    """Three ZooKeeper 3.8 members on loopback (``tickTime`` 500 ms, as the single server).

    A member keeps an election connection only from a member with a higher id; one
    opened by a lower id it drops, and it connects back to the address that member
    advertised: that member's own ``zoo.cfg`` entry, its real port, past every proxy.
    A partition holds no new connection of that kind (each begins through a proxy),
    but one opened before stays up, and the majority would keep electing the cut-off
    leader through it. So :meth:`isolate` also cuts the connections between the member
    and the others' real ports, and keeps cutting them until :meth:`heal`
    (:class:`~tests.chaos.sockets.Severance`).
    """

    def __init__(self) -> None:
        super().__init__([ZooKeeperMember("zookeeper", index, 2) for index in range(SIZE)])
        self._severance: Severance | None = None

    def isolate(self, member: Member) -> None:
        super().isolate(member)
        self._severance = Severance(member.pid, member.peer_ports, {
            other.pid: other.peer_ports for other in self.members if other is not member})
        self._severance.start()

    def heal(self) -> None:
        if self._severance is not None:
            self._severance.stop()
            self._severance = None
        super().heal()

    def report(self) -> str:
        failures = self._severance.failures if self._severance is not None else []
        return "\n".join([super().report(), *failures])

    def launch(self, member: Member) -> None:
        java = require_binary("java", "default-jre-headless")
        require_binary(ZOOKEEPER_SCRIPT, "zookeeper")
        config = os.path.join(member.data_dir, "zoo.cfg")
        with open(os.path.join(member.data_dir, "myid"), "w") as out:
            out.write(f"{member.index + 1}\n")
        classpath = [member.data_dir, ZOOKEEPER_JAR]
        if os.path.exists(SLF4J_SIMPLE_JAR):
            classpath.append(SLF4J_SIMPLE_JAR)

        def command() -> list[str]:
            lines = [CLUSTER_CFG.format(data_dir=member.data_dir, port=member.port,
                                        force_sync="no")]
            for other in self.members:
                # A member listens on its own real ports and reaches the others' proxies.
                quorum, election = (other.peer_ports if other is member
                                    else [proxy.port for proxy in other.proxies])
                lines.append(f"server.{other.index + 1}=127.0.0.1:{quorum}:{election}\n")
            with open(config, "w") as out:
                out.write("".join(lines))
            return [
                java, "-Xmx192m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Dzookeeper.log.dir={member.data_dir}",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", ":".join(classpath),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain", config,
            ]

        member.start_on_free_ports(command)

    def is_leader(self, member: Member) -> bool:
        return "Mode: leader" in four_letter_word(member.port, "srvr")
