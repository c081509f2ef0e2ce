"""Redis: conch ``redis://`` against tooz's redis driver, redis-py's Lock and python-redis-lock.

* **conch**: an ACQUIRE script (``SET`` + fencing token) and a RELEASE script;
  a waiter blocks in ``BLPOP`` on a signal the release pushes; one renewal call
  per coordinator every ``ttl / 3`` whatever the number of locks held.
* **tooz** wraps redis-py's Lock (below) and renews each lock from its heartbeat.
* **redis-py Lock** (``client.lock(name, timeout=10)``): ``SET NX PX``, a release
  script; a blocked acquire retries every 100 ms (its default ``sleep``). No renewal.
* **python-redis-lock** (``expire=10, auto_renewal=True``): ``GET`` + ``SET NX EX``,
  waits in ``BLPOP`` on a signal like conch; one renewal thread per held lock.
* **floor**: a one-token list, ``BLPOP`` to take and ``LPUSH`` to give back: one
  request each, blocking in the server; no TTL, no owner check, no token.
* **PING floor**: one ``PING`` per cycle, measured uncontended only: the round-trip
  that the hand-off goal of issue 13 is a multiple of.
* **fenced scripts floor**: conch's own ACQUIRE and RELEASE scripts called through bare
  redis-py on one kept connection (as conch's steps), waiting as conch does (``BLPOP`` +
  ACQUIRE in one pipeline) but with no renewal, no conch object and no turns: what a
  fenced, owner-checked, waking lock costs on the wire and in the server.

``python -m benchmarks.contenders.redis`` also counts, per acquisition, the
requests each library sends (writes to the socket, a pipeline counting once)
and the commands the server runs (commands inside scripts included).
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
import redis_lock
from redis.connection import AbstractConnection
from tests.servers.redis import start_redis

from benchmarks.contenders.base import Contender, LockLike, Target
from benchmarks.contenders.common import Conch, Tooz
from conch.backends.redis import steps

PING = "PING round-trip"
SCRIPTS = "fenced scripts"
TARGETS = (
    Target("hand-off p50 ≤ python-redis-lock's (issue 13)", "handoff p50", "conch", 1.0,
           peer="python-redis-lock"),
    Target("hand-off p50 ≤ 6x a PING round-trip (issue 13)", "handoff p50", "conch", 6.0,
           peer=PING, peer_metric="uncontended p50"),
    Target("uncontended p50 ≤ redis-py Lock's (issue 13)", "uncontended p50", "conch", 1.0,
           peer="redis-py Lock"),
    Target("uncontended p50 ≤ redis-py Lock's, floor: conch's scripts by hand", "uncontended p50",
           SCRIPTS, 1.0, peer="redis-py Lock"),
    *(Target(f"contended x{count} ≥ redis-py Lock's acquisitions/s (issue 13)",
             f"throughput {count}", "conch", 1.0, higher_is_better=True, peer="redis-py Lock")
      for count in (2, 4, 8)),
)


@contextmanager
def target() -> Iterator[str]:
    """A Redis server of the test harness (with a password), stopped by PID afterwards."""
    server = start_redis(password=f"bench-{uuid.uuid4().hex}")
    try:
        yield f"{server.url}/0"
    finally:
        server.cleanup()






class _Client(Contender):
    """A contender on a plain redis-py client."""

    def setup(self) -> None:
        self._client = redis.Redis.from_url(self.target)

    def teardown(self) -> None:
        self._client.close()


class RedisPyLock(_Client):
    """redis-py's ``Lock`` with a 10 s TTL and its defaults otherwise."""

    name = "redis-py Lock"
    distribution = "redis"

    def lock(self, name: str) -> LockLike:
        lock: LockLike = self._client.lock(name, timeout=10)
        return lock


class PythonRedisLock(_Client):
    """python-redis-lock's ``Lock`` with a 10 s TTL renewed by its own thread."""

    name = "python-redis-lock"
    distribution = "python-redis-lock"

    def lock(self, name: str) -> LockLike:
        lock: LockLike = redis_lock.Lock(self._client, name, expire=10, auto_renewal=True)
        return lock


class _TokenList:
    """A list holding one token: ``BLPOP`` takes it, ``LPUSH`` puts it back."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self._client = client
        self._key = f"bench-floor:{name}"
        if client.set(f"{self._key}:created", 1, nx=True):  # the first process adds the token
            client.lpush(self._key, 1)

    def acquire(self) -> bool:
        self._client.blpop([self._key], 0)
        return True

    def release(self) -> None:
        self._client.lpush(self._key, 1)


class BareTokenList(_Client):
    """The floor: one blocking request to take, one to give back."""

    name = "bare BLPOP/LPUSH"
    distribution = "redis"
    floor = True

    def lock(self, name: str) -> LockLike:
        return _TokenList(self._client, name)


class _Ping:
    """One PING per acquire, nothing to release: a round-trip, not a lock."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def acquire(self) -> bool:
        return bool(self._client.ping())

    def release(self) -> None:
        pass


class PingRoundTrip(_Client):
    """The round-trip floor, measured uncontended only (it excludes nobody)."""

    name = PING
    distribution = "redis"
    floor = True

    def lock(self, name: str) -> LockLike:
        _uncontended_only(name, "a PING is no lock")
        return _Ping(self._client)


def _uncontended_only(name: str, what: str) -> None:
    if "uncontended" not in name:
        raise NotImplementedError(f"{what}: measured uncontended only")


class _FencedScripts:
    """conch's ACQUIRE and RELEASE scripts with a fixed value: a fenced hold and its
    owner-checked, waking release, two ``EVALSHA`` round-trips (``Redis.evalsha``, as
    conch sends them); a busy acquire waits as conch's does (``BLPOP``, then ACQUIRE in
    the same pipeline). No renewal, no conch object, no turns."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self._client = client
        self._acquire, self._release = (client.script_load(source)
                                        for source in (steps.ACQUIRE, steps.RELEASE))
        self._keys = steps.lock_keys(f"bench-floor:{name}".encode())
        self._value = uuid.uuid4().hex.encode()

    def acquire(self) -> bool:
        call = steps.acquire_call(self._keys, self._value, 10_000, False)
        token, busy_for = steps.acquire_outcome(self._evalsha(self._acquire, call), 10.0)
        while token is None:
            pipeline = self._client.pipeline(transaction=False)
            pipeline.blpop([self._keys.wake], min(busy_for, 10.0))
            pipeline.evalsha(self._acquire, len(call[1]), *call[1], *call[2])
            token, busy_for = steps.acquire_outcome(pipeline.execute()[1], 10.0)
        return True

    def release(self) -> None:
        self._evalsha(self._release, steps.release_call(self._keys, self._value))

    def _evalsha(self, sha: str, call: steps.ScriptCall) -> Any:
        _, keys, args = call
        return self._client.evalsha(sha, len(keys), *keys, *args)


class FencedScripts(_Client):
    """The floor of a fenced lock with server wake-ups: conch's protocol without conch,
    its steps on one kept connection as conch's (``single_connection_client``; the waits'
    pipelines take one of the pool)."""

    name = SCRIPTS
    distribution = "redis"
    floor = True

    def setup(self) -> None:
        self._client = redis.Redis.from_url(self.target, single_connection_client=True)

    def lock(self, name: str) -> LockLike:
        return _FencedScripts(self._client, name)


CONTENDERS: tuple[type[Contender], ...] = (
    Conch, Tooz, RedisPyLock, PythonRedisLock, BareTokenList, PingRoundTrip, FencedScripts,
)


# Requests per acquisition -------------------------------------------------------------


def _count_requests() -> Callable[[], int]:
    """Count every write of a redis-py connection from now on; return the reader."""
    sent = [0]
    original = AbstractConnection.send_packed_command

    @functools.wraps(original)
    def counting(self: AbstractConnection, *args: object, **kwargs: object) -> None:
        sent[0] += 1
        original(self, *args, **kwargs)  # type: ignore[no-untyped-call]

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    return lambda: sent[0]


def _cycles(contender_class: type[Contender], target: str, name: str, seconds: float,
            report: multiprocessing.connection.Connection) -> None:
    """In a child: acquire and release ``name`` for ``seconds``; send (cycles, requests)."""
    contender = contender_class(target)
    contender.setup()
    lock = contender.lock(name)
    requests = _count_requests()
    cycles, stop_at = 0, time.monotonic() + seconds
    while time.monotonic() < stop_at:
        lock.acquire()
        lock.release()
        cycles += 1
    report.send((cycles, requests()))
    contender.teardown()


def requests_per_acquisition(contender_class: type[Contender], target: str,
                             processes: int, seconds: float = 2.0) -> tuple[float, float]:
    """(client requests, server commands) per acquisition with ``processes`` contending."""
    fork = multiprocessing.get_context("fork")
    name = f"count-{'uncontended-' if processes == 1 else ''}{uuid.uuid4().hex}"
    with redis.Redis.from_url(target) as admin:
        before = int(admin.info("stats")["total_commands_processed"])
        pipes = [fork.Pipe(duplex=False) for _ in range(processes)]
        children = [fork.Process(target=_cycles, args=(contender_class, target, name, seconds,
                                                       sender)) for _, sender in pipes]
        for child in children:
            child.start()
        counts = [receiver.recv() for receiver, _ in pipes]
        for child in children:
            child.join()
        # Minus the two INFO calls of this count.
        executed = int(admin.info("stats")["total_commands_processed"]) - before - 2
    acquisitions = sum(cycles for cycles, _ in counts)
    return (sum(requests for _, requests in counts) / acquisitions,
            executed / acquisitions)


def main() -> None:
    """Print the requests-per-acquisition table (markdown): client requests / server
    commands, alone and with 2, 4 and 8 processes contending."""
    counts = (1, 2, 4, 8)
    print("| contender | " + " | ".join(f"{'alone' if n == 1 else f'{n} procs'}: requests"
                                       f" / server cmds" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    with target() as url:
        measured: tuple[type[Contender], ...] = (*CONTENDERS[:-2], FencedScripts)
        for contender_class in measured:
            figures = [requests_per_acquisition(contender_class, url, n) for n in counts]
            print(f"| {contender_class.name} | " + " | ".join(
                f"{sent:.2f} / {run:.2f}" for sent, run in figures) + " |", flush=True)


if __name__ == "__main__":
    main()
