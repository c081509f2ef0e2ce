"""etcd v3: conch ``etcd://`` against tooz's ``etcd3+http`` driver (etcd3gw).

* **conch**: one lease per coordinator; an uncontended cycle is two requests
  (a transaction that puts the key if nobody queues, a delete). A waiter watches
  its predecessor's key, so a release wakes it through the watch stream.
* **tooz** (etcd3gw, over ``requests``): each acquire grants a new lease and
  tries a put-if-absent transaction; a blocked acquire retries it about once a
  second; release deletes the key but never revokes the lease, so every
  acquire leaves a lease behind until its TTL (30 s) runs out.
* **etcd lock service**: etcd's own ``/v3/lock/lock`` and ``/v3/lock/unlock``
  (the same queue recipe, run inside the server) over one urllib3 pool and one
  lease per process: one request to lock (it blocks in the server until the
  lock is ours), one to unlock, nothing else: the least a client can do, but
  not a floor for hand-offs. Its waiter watches from the revision it read, an
  "unsynced" watch that etcd serves from a loop running every 100 ms
  (mvcc ``syncWatchersLoop``), so its hand-offs take tens of milliseconds.

* **range RTT floor**: a local ``flock`` (the kernel's hand-off) and one range request
  per acquire: the least any etcd lock's acquire or hand-off costs.
* **FIFO queue floor**: the least one fenced FIFO acquisition asks of etcd, by hand over
  conch's own gateway client: one transaction that takes the lock or queues a key behind
  the keys it reads (its revision is the token), the deletions of those keys seen on a
  watch of the queue kept open, and one delete. No session, heartbeat or bookkeeping.

``python -m benchmarks.etcd_calls`` counts the leases each library leaves in etcd and
the etcd calls per contended acquisition.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from tests.servers.etcd import start_etcd

from benchmarks.contenders import common
from benchmarks.contenders.base import Contender, LockLike, Settings, Target
from benchmarks.contenders.common import Conch
from conch.backends.base import Deadline
from conch.backends.etcd.client import Gateway, Watch, decode, encode, keys_under
from conch.url import parse_url

# tooz's hand-offs take about a second each and its cycles ~10 ms: fewer rounds keep a
# run near three minutes.
SETTINGS = Settings(iterations=1_000, handoff_rounds=60)

TARGETS = (
    # The "≤ 5x range RTT" divides by the floor's uncontended p50 (one range
    # request): a target compares one metric, so the report's issue row does that sum.
    Target("hand-off p50 ≤ 5x the floor's (the kernel's hand-off, then one range request)",
           "handoff p50", "conch", 5.0, peer="range RTT floor"),
    Target("uncontended p50 ≤ 0.6x tooz's (one lease per session, not one per acquire)",
           "uncontended p50", "conch", 0.6, peer="tooz"),
    *(Target(f"contended throughput ≥ 1.5x tooz's ({count} processes)", f"throughput {count}",
             "conch", 1.5, higher_is_better=True, peer="tooz") for count in (2, 4, 8)),
    Target("hand-off p50 ≤ 0.1x tooz's (watched, not polled once a second)",
           "handoff p50", "conch", 0.1, peer="tooz"),
    Target("uncontended p50 ≤ 1.5x etcd's own lock service (two requests per cycle each)",
           "uncontended p50", "conch", 1.5, peer="etcd lock service"),
)


@contextmanager
def target() -> Iterator[str]:
    """An etcd of the test harness (no auth: tooz's driver takes no credentials)."""
    server = start_etcd()
    try:
        yield f"etcd://{server.endpoint}"
    finally:
        server.cleanup()


def _endpoint(url: str) -> str:
    return url.removeprefix("etcd://")




class Tooz(common.Tooz):
    """tooz's ``etcd3+http://`` driver: a started coordinator's ``get_lock``."""

    def tooz_url(self) -> str:
        return f"etcd3+http://{_endpoint(self.target)}"


class _ServiceLock:
    """A name of etcd's lock service: ``lock`` blocks in the server, ``unlock`` frees it."""

    def __init__(self, pool: urllib3.HTTPConnectionPool, lease: str, name: str) -> None:
        self._pool = pool
        self._lease = lease
        self._name = base64.b64encode(name.encode()).decode()
        self._key = ""

    def acquire(self) -> bool:
        answer = _post(self._pool, "/v3/lock/lock", {"name": self._name, "lease": self._lease})
        self._key = answer["key"]
        return True

    def release(self) -> None:
        _post(self._pool, "/v3/lock/unlock", {"key": self._key})


class EtcdLockService(Contender):
    """etcd's own lock service: two requests per cycle on one lease."""

    name = "etcd lock service"

    def setup(self) -> None:
        host, _, port = _endpoint(self.target).partition(":")
        self._pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=4, retries=False,
                                                timeout=urllib3.Timeout(connect=3, read=None))
        self._lease = _post(self._pool, "/v3/lease/grant", {"TTL": 60})["ID"]

    def lock(self, name: str) -> LockLike:
        return _ServiceLock(self._pool, self._lease, name)

    def teardown(self) -> None:
        _post(self._pool, "/v3/lease/revoke", {"ID": self._lease})
        self._pool.close()


class _RangeAfterFlock:
    """The floor's lock: the kernel's own hand-off (``flock``), then one range request."""

    def __init__(self, pool: urllib3.HTTPConnectionPool, name: str) -> None:
        self._pool = pool
        self._file = open(f"/tmp/conch-etcd-floor-{name}", "a")  # noqa: SIM115
        self._key = base64.b64encode(name.encode()).decode()

    def acquire(self) -> bool:
        fcntl.flock(self._file, fcntl.LOCK_EX)
        _post(self._pool, "/v3/kv/range", {"key": self._key})
        return True

    def release(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)


class RangeFloor(Contender):
    """One etcd round trip (a range request) per acquire, after a local ``flock``: the
    least an etcd lock's acquire or hand-off can cost."""

    name = "range RTT floor"
    floor = True

    def setup(self) -> None:
        host, _, port = _endpoint(self.target).partition(":")
        self._pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=4, retries=False)

    def lock(self, name: str) -> LockLike:
        return _RangeAfterFlock(self._pool, name)

    def teardown(self) -> None:
        self._pool.close()


class _QueueByHand:
    """One fenced FIFO queue: a key per acquisition on one lease; the oldest key holds."""

    def __init__(self, gateway: Gateway, lease: int, name: str) -> None:
        self._gateway, self._lease = gateway, lease
        self._queue = f"/conch-floor/{name}/".encode()
        self._watch: Watch = gateway.watch(self._queue, deletes_only=True)
        self._serial = itertools.count()
        self._key = b""

    def acquire(self) -> int:
        self._key = self._queue + f"{self._lease:x}-{next(self._serial)}".encode()
        put = {"request_put": {"key": encode(self._key), "lease": str(self._lease)}}
        self._watch.take_changes()
        answer = self._gateway.txn(
            compare=[{**keys_under(self._queue), "target": "CREATE", "result": "EQUAL",
                      "create_revision": "0"}],
            success=[put], failure=[{"request_range": keys_under(self._queue, keys_only=True)},
                                    put])
        listed = answer["responses"][0].get("response_range", {}).get("kvs", [])
        ahead = {decode(kv["key"]) for kv in listed}
        while ahead:
            self._watch.wait(Deadline(None))
            ahead -= self._watch.take_changes()
        return int(answer["header"]["revision"])

    def release(self) -> None:
        self._gateway.delete(self._key)

    def close(self) -> None:
        self._watch.close()


class QueueFloor(Contender):
    """The fenced FIFO queue by hand: a transaction and a delete per acquisition, woken by
    a watch opened once."""

    name = "FIFO queue floor"
    floor = True

    def setup(self) -> None:
        self._gateway = Gateway(parse_url(self.target), None)
        self._gateway.open()
        self._lease = int(self._gateway.call("/v3/lease/grant", {"TTL": 60})["ID"])
        self._locks: list[_QueueByHand] = []

    def lock(self, name: str) -> LockLike:
        self._locks.append(_QueueByHand(self._gateway, self._lease, name))
        return self._locks[-1]

    def teardown(self) -> None:
        for lock in self._locks:
            lock.close()
        self._gateway.call("/v3/lease/revoke", {"ID": str(self._lease)})
        self._gateway.close()


def _post(pool: urllib3.HTTPConnectionPool, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = pool.urlopen("POST", path, body=json.dumps(body).encode())
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status} {response.data[:200]!r}")
    answer: dict[str, Any] = json.loads(response.data)
    return answer


CONTENDERS: tuple[type[Contender], ...] = (Conch, Tooz, EtcdLockService, RangeFloor,
                                           QueueFloor)
