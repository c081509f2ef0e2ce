"""Three-member etcd and ZooKeeper clusters: the leader killed, a minority cut off.

* **leader killed** (SIGKILL) while four processes contend for two names through
  every member: the contenders fail over to the other members, the cluster elects
  a new leader, and locking goes on. Measured: from the kill to the first
  critical section entered after it (a fifth process tries if the contention
  ended before the election did).
* **minority partitioned away with a holder in it**: the holder reaches only the
  leader, which is then cut off from the two others; a waiter reaches only those
  two. The holder must be told before the majority grants the lock to the waiter,
  and its late write must be fenced out.

The history and the fenced counters must show no violation. The clusters
(:mod:`tests.chaos.clusters`) are started once for this module, and put back
together (healed, killed members restarted) after each test.
"""

from __future__ import annotations

import contextlib
import pathlib
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

import conch
from conch.history import load
from tests.chaos.clusters import Cluster, EtcdCluster
from tests.chaos.scenario import Scenario
from tests.chaos.targets import Target
from tests.chaos.test_server_faults import next_acquired
from tests.chaos.worker import Holder
from tests.chaos.zookeeper_cluster import ZooKeeperCluster

CONTENTION = 10.0
"""Seconds the contenders run; the leader is killed after :data:`KILL_AFTER` of them."""
KILL_AFTER = 2.0
TOLD_WITHIN = 10.0
RECOVERY = 60.0


def cluster_url(kind: str, endpoints: str, namespace: str) -> str:
    """A URL for ``endpoints`` of a cluster of ``kind``, with short leases."""
    if kind == "etcd":
        return f"etcd://{endpoints}/chaos-{namespace}?ttl=2&timeout=1&connect_timeout=1"
    return f"zookeeper://{endpoints}/chaos-{namespace}?timeout=2&connect_timeout=5"


@pytest.fixture(scope="module")
def clusters() -> Iterator[Callable[[str], Cluster]]:
    """The module's clusters by kind, each started on first use."""
    started: dict[str, Cluster] = {}

    def get(kind: str) -> Cluster:
        if kind not in started:
            cluster = EtcdCluster() if kind == "etcd" else ZooKeeperCluster()
            cluster.start()
            started[kind] = cluster
        return started[kind]

    try:
        yield get
    finally:
        for cluster in started.values():
            cluster.cleanup()


@pytest.fixture(params=["etcd", "zookeeper"])
def cluster(request: pytest.FixtureRequest,
            clusters: Callable[[str], Cluster]) -> Iterator[Cluster]:
    """A healthy cluster of each kind in turn, put back together after the test."""
    started = clusters(request.param)
    started.restore()
    try:
        yield started
    finally:
        started.restore()


@pytest.fixture
def run(request: pytest.FixtureRequest, cluster: Cluster,
        tmp_path: pathlib.Path) -> Iterator[Scenario]:
    """A scenario whose target URL reaches every member of ``cluster``."""
    kind = "etcd" if isinstance(cluster, EtcdCluster) else "zookeeper"
    namespace = uuid.uuid4().hex
    target = Target(kind, None, local_url=cluster_url(kind, cluster.endpoints(), namespace),
                    namespace=namespace)
    scenario = Scenario(request.node.originalname, target, tmp_path / "run",
                        params=request.node.callspec.id)
    try:
        yield scenario
    finally:
        scenario.close()


@contextlib.contextmanager
def _explained(cluster: Cluster) -> Iterator[None]:
    """Add the members' states, connections and logs to a failed assertion's message."""
    try:
        yield
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{cluster.report()}") from None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["lock", "election"])
def test_killing_the_leader_during_contention_loses_no_update(
    run: Scenario, cluster: Cluster, kind: str
) -> None:
    run.drive_leaders(kind)
    names = [run.lock_name, f"{run.lock_name}-2"]
    contenders = run.contend(4, CONTENTION, names)
    time.sleep(KILL_AFTER)
    leader = cluster.leader()
    leader.kill()
    killed = time.monotonic()
    tallies = run.tallies(contenders, CONTENTION + RECOVERY)

    sections = load(run.history)
    assert sum(tally.acquisitions for tally in tallies) == len(sections)
    after = [section.enter for section in sections if section.enter > killed + 0.05]
    if not after:  # the election outlasted the contention: one more process tries
        probe = _holder_once_serving(run, "probe", deadline=killed + RECOVERY)
        assert probe.acquire(RECOVERY) is not None, "no lock since the leader was killed"
        after = [time.monotonic()]
        assert not probe.release()
    run.measure("first section after the leader was killed", min(after) - killed)
    run.note("contention", f"{len(sections)} sections, {len(after)} after the kill, "
                           f"{sum(t.errors for t in tallies)} errors, "
                           f"{sum(t.losses_reported for t in tallies)} losses reported")
    run.check()


def _holder_once_serving(run: Scenario, name: str, deadline: float) -> Holder:
    """A holder connected once the cluster serves again (a ZooKeeper election may take
    longer than one connect timeout)."""
    while True:
        try:
            return run.holder(name)
        except conch.BackendUnavailable:
            if time.monotonic() > deadline:
                raise


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["lock", "election"])
def test_a_holder_in_a_partitioned_minority_is_told_before_the_majority_grants_the_lock(
    run: Scenario, cluster: Cluster, kind: str
) -> None:
    run.drive_leaders(kind)
    kind, namespace = run.target.backend, run.target.namespace
    leader = cluster.leader()
    majority = [member for member in cluster.members if member is not leader]
    holder = run.worker("minority-holder",
                        url=cluster_url(kind, cluster.endpoints([leader]), namespace))
    first_token = int(holder.ask("acquire 10").removeprefix("acquired "))
    assert holder.ask("read") == "read 0"
    waiter = run.worker("majority-waiter",
                        url=cluster_url(kind, cluster.endpoints(majority), namespace))
    waiter.send(f"acquire {RECOVERY}")
    time.sleep(0.3)

    cluster.isolate(leader)
    cut = time.monotonic()
    told = holder.ask(f"wait-lost {TOLD_WITHIN}")
    assert told.startswith("lost "), "the holder in the minority was never told"
    told_at = float(told.split()[1])
    run.measure("minority holder told", told_at - cut)
    with _explained(cluster):
        next_acquired([waiter], RECOVERY)
    run.measure("majority waiter got the lock", time.monotonic() - cut)
    assert waiter.ask("read") == "read 0"
    assert waiter.ask("write") == "accepted"
    assert holder.ask("write") == "rejected", "the minority holder's write got through"
    assert holder.ask("release") == "lost"
    assert waiter.ask("release") == "released"
    waiter_section = next(s for s in load(run.history) if s.holder == "majority-waiter")
    assert waiter_section.token is not None and waiter_section.token > first_token
    assert told_at < waiter_section.enter, "the majority granted the lock before the holder knew"
    run.check()
