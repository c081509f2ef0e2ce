"""Where ``python -m benchmarks.aio`` runs: the backends, their settings and targets."""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg
import redis
from tests.servers.redis import start_redis

from benchmarks.aio_contenders import (
    AsyncContender,
    AsyncioLock,
    ConchAio,
    ConchAioThreads,
    ConchSync,
    FileLockAsync,
    PsycopgAdvisoryLock,
    RedisPyAsyncLock,
    async_file_lock,
    postgresql_conninfo,
)
from benchmarks.contenders.postgresql import target as postgresql_target

Counter = Callable[[], int]
"""Client connections the server has now."""


@contextmanager
def _memory() -> Iterator[str]:
    yield f"memory://bench-aio-{uuid.uuid4().hex[:12]}"


@contextmanager
def _file() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="conch-bench-aio-") as directory:
        yield f"file://{directory}"


@contextmanager
def _redis() -> Iterator[str]:
    # As benchmarks/contenders/redis.py does (a module that needs python-redis-lock).
    server = start_redis(password=f"bench-{uuid.uuid4().hex}")
    try:
        yield f"{server.url}/0"
    finally:
        server.cleanup()


@contextmanager
def redis_connections(target: str) -> Iterator[Counter]:
    """Count the server's clients (``CLIENT LIST``, this counter's own included)."""
    with redis.Redis.from_url(target) as admin:
        yield lambda: len(admin.client_list())


@contextmanager
def postgresql_connections(target: str) -> Iterator[Counter]:
    """Count the server's client sessions (``pg_stat_activity``, this counter's included)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    with psycopg.connect(postgresql_conninfo(target), autocommit=True) as admin:
        def count() -> int:
            row = admin.execute(query).fetchone()
            assert row is not None
            return int(row[0])

        yield count


@dataclasses.dataclass(frozen=True)
class AioSettings:
    """How much each measurement does on one backend."""

    iterations: int = 2_000
    """Uncontended acquire+release cycles timed (each block after a tenth as many untimed)."""
    handoff_rounds: int = 150
    """Hand-offs between the two members (each block's first tenth not counted)."""
    hold_ms: tuple[float, float] = (2.0, 12.0)
    """Each hand-off's holder keeps the lock a uniformly drawn time in this range, the
    same sequence for every contender of a block. Where an alternative polls, the range
    spans its polling interval, so that the release falls at a random point of its sleep."""
    waiters: int = 100
    """Coroutines of member 1 waiting on one name held by member 0."""
    settle_s: float = 0.5
    """How long the waiters wait at least before the holder releases (while threads
    and connections are sampled; longer until those counts are steady)."""
    blocks: int = 3
    """Each measurement is split into this many blocks, run in turn for every contender."""

    def quick(self) -> AioSettings:
        """A smoke run: about a tenth of the work."""
        return dataclasses.replace(
            self, iterations=max(200, self.iterations // 10),
            handoff_rounds=max(20, self.handoff_rounds // 10), settle_s=0.3)


@dataclasses.dataclass(frozen=True)
class AioBackend:
    """One backend of the benchmark: where, what to compare, how to count connections."""

    name: str
    target: Callable[[], AbstractContextManager[str]]
    contenders: tuple[type[AsyncContender], ...]
    settings: AioSettings
    connections: Callable[[str], AbstractContextManager[Counter]] | None = None
    missing: tuple[str, ...] = ()
    """Alternatives that could not be measured, and why."""


_CONCH = (ConchAio, ConchAioThreads, ConchSync)
_FILELOCK_MISSING = () if async_file_lock() is not None else (
    "filelock AsyncFileLock: the installed filelock has none (it needs filelock >= 3.15, "
    "`pip install -e .[bench]`)",)

BACKENDS = {
    "memory": AioBackend("memory", _memory, (*_CONCH, AsyncioLock),
                         AioSettings(iterations=10_000)),
    "file": AioBackend("file", _file,
                       (*_CONCH, *((FileLockAsync,) if not _FILELOCK_MISSING else ())),
                       AioSettings(iterations=10_000, handoff_rounds=120, hold_ms=(2.0, 52.0)),
                       missing=_FILELOCK_MISSING),
    "redis": AioBackend("redis", _redis, (*_CONCH, RedisPyAsyncLock),
                        AioSettings(handoff_rounds=120, hold_ms=(2.0, 102.0)), redis_connections),
    "postgresql": AioBackend("postgresql", postgresql_target, (*_CONCH, PsycopgAdvisoryLock),
                             AioSettings(), postgresql_connections),
}
