"""The elections ``python -m benchmarks.elections`` compares: conch's and its peers'.

Each is a :class:`Candidate`: set up in the process that campaigns, it campaigns for one
election, calls ``term()`` as soon as it leads and resigns when ``term()`` returns. Every
candidate is given the backend's conch URL; its query names the session or lease bound
(``ttl=3``, ZooKeeper's ``timeout=3``), which the peers take over.
"""

from __future__ import annotations

import abc
import base64
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import urllib3
from kazoo.client import KazooClient  # type: ignore[import-untyped]
from tooz import coordination

import conch
from conch.url import parse_url

Term = Callable[[], None]
"""Called once the candidate leads; the candidate resigns when it returns."""


def lease_seconds(url: str) -> int:
    """The session or lease bound the URL's query sets (``ttl``, ZooKeeper's ``timeout``)."""
    query = parse_url(url).query
    return int(query.get("ttl") or query["timeout"])


class Candidate(abc.ABC):
    """One library's candidate for an election, used by one process."""

    name: ClassVar[str]
    """How the results name it."""
    distribution: ClassVar[str]
    """The installed distribution whose version the results record."""
    resigns: ClassVar[str]
    """How its leader resigns, for the report."""

    def __init__(self, target: str) -> None:
        """Remember the backend's conch URL; do no I/O."""
        self.target = target

    def setup(self) -> None:  # noqa: B027 - a candidate may need none
        """Connect, in the process that campaigns."""

    @abc.abstractmethod
    def lead(self, name: str, term: Term) -> None:
        """Campaign for election ``name`` until won, call ``term()``, then resign."""

    def teardown(self) -> None:  # noqa: B027 - a candidate may need none
        """Disconnect (the process ends right after)."""


class Conch(Candidate):
    """``coordinator.election(name)``: ``campaign()``, then ``resign()``."""

    name = "conch"
    distribution = "conch"
    resigns = "`election.resign()`"

    def setup(self) -> None:
        self._coordinator = conch.connect(self.target)

    def lead(self, name: str, term: Term) -> None:
        election = self._coordinator.election(name)
        election.campaign()
        term()
        election.resign()

    def teardown(self) -> None:
        self._coordinator.stop()


class KazooElection(Candidate):
    """kazoo's ``Election`` recipe: ``run(term)`` blocks until elected, calls ``term`` and
    gives leadership up when it returns (its ``Lock``: ephemeral sequential znodes, each
    waiter watching its predecessor)."""

    name = "kazoo Election"
    distribution = "kazoo"
    resigns = "`term` returns from `Election.run`"

    def setup(self) -> None:
        url = parse_url(self.target)
        hosts = ",".join(f"{host}:{port}" for host, port in url.hosts)
        self._client = KazooClient(hosts, timeout=float(lease_seconds(self.target)))
        self._client.start(timeout=10)
        self._root = url.path

    def lead(self, name: str, term: Term) -> None:
        self._client.Election(f"{self._root}/kazoo-{name}", "bench").run(term)

    def teardown(self) -> None:
        self._client.stop()
        self._client.close()


TOOZ_POLL_S = 0.1
"""How often a tooz candidate calls ``run_watchers()``: tooz's own leader-election example
(``examples/leader_election.py``) sleeps 0.1 s between calls."""


class Tooz(Candidate):
    """tooz's ``watch_elected_as_leader``: a candidate learns it won only from a call of
    ``run_watchers()`` (which runs ``run_elect_coordinator``: a non-blocking acquire of the
    group's leader lock), made every :data:`TOOZ_POLL_S`; the heart thread keeps the leader
    lock alive. Its session bound is the URL's ``timeout``."""

    name = "tooz"
    distribution = "tooz"
    resigns = ("`stand_down_group_leader` (zookeeper); `stop()` elsewhere: tooz 9.1 has no "
               "other way to stand down")

    def setup(self) -> None:
        url = self.target.partition("?")[0]
        self._scheme = url.partition("://")[0]
        self._coordinator: Any = coordination.get_coordinator(
            f"{url}?timeout={lease_seconds(self.target)}", f"bench-{uuid.uuid4()}".encode())
        self._coordinator.start(start_heart=True)
        self._stopped = False

    def lead(self, name: str, term: Term) -> None:
        group = name.encode()
        elected = threading.Event()
        self._coordinator.watch_elected_as_leader(group, lambda _event: elected.set())
        while True:
            self._coordinator.run_watchers()
            if elected.is_set():
                break
            time.sleep(TOOZ_POLL_S)
        term()
        # Only tooz's zookeeper driver implements stand_down_group_leader; stop()
        # releases every lock of the coordinator, the leader lock among them.
        if self._scheme == "zookeeper":
            self._coordinator.stand_down_group_leader(group)
        else:
            self._coordinator.stop()
            self._stopped = True

    def teardown(self) -> None:
        if not self._stopped:
            self._coordinator.stop()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EtcdLease(Candidate):
    """A lease-based election written by hand on etcd's v3 JSON gateway (urllib3), as
    etcd's own ``concurrency.Election`` does it minus the queue: one lease per process,
    kept alive every ``ttl / 3`` by a thread; campaign: a transaction that creates the
    election's key with the lease if it does not exist, else a watch of the key's deletion
    from the next revision on, then again; resign: delete the key. A dead leader's key goes
    with its lease."""

    name = "etcd lease by hand"
    distribution = "urllib3"
    resigns = "delete the key"

    def setup(self) -> None:
        [(self._host, self._port)] = parse_url(self.target).hosts
        self._pool = urllib3.HTTPConnectionPool(
            self._host, self._port, maxsize=2, retries=False,
            timeout=urllib3.Timeout(connect=3, read=10))
        ttl = lease_seconds(self.target)
        self._lease = self._call("/v3/lease/grant", {"TTL": ttl})["ID"]
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep_alive, args=(ttl / 3,), daemon=True)
        self._keeper.start()

    def lead(self, name: str, term: Term) -> None:
        key = _b64(f"bench-election/{name}".encode())
        create_if_absent = {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": _b64(b"leader"),
                                         "lease": self._lease}}],
        }
        while True:
            answer = self._call("/v3/kv/txn", create_if_absent)
            if answer.get("succeeded"):  # the gateway leaves out a false
                break
            self._wait_deleted(key, int(answer["header"]["revision"]) + 1)
        term()
        self._call("/v3/kv/deleterange", {"key": key})

    def teardown(self) -> None:
        self._stop.set()
        self._keeper.join()
        self._call("/v3/lease/revoke", {"ID": self._lease})
        self._pool.close()

    def _keep_alive(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._call("/v3/lease/keepalive", {"ID": self._lease})

    def _wait_deleted(self, key: str, revision: int) -> None:
        """Return once ``key`` is deleted at ``revision`` or later. Starting there (the
        next revision) makes it a "synced" watch, told at once rather than from etcd's
        100 ms catch-up loop, and sees a deletion that came before the watch."""
        stream = http.client.HTTPConnection(self._host, self._port, timeout=None)
        try:
            watch = {"key": key, "start_revision": str(revision), "filters": ["NOPUT"]}
            stream.request("POST", "/v3/watch", body=json.dumps({"create_request": watch}))
            response = stream.getresponse()
            while True:
                line = response.readline()  # one JSON message per line
                if not line:
                    raise RuntimeError("etcd ended the watch stream")
                result = json.loads(line).get("result", {})
                if result.get("events") or result.get("canceled"):
                    return
        finally:
            stream.close()

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._pool.request("POST", path, json=body)
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status} {response.data[:200]!r}")
        answer: dict[str, Any] = response.json()
        return answer
