"""What ``python -m benchmarks.aio`` compares: the contenders.

Every backend compares three ways of using conch from a coroutine:

* **conch.aio**: ``conch.aio`` as shipped: native asyncio when the backend declares
  ``native_async``, else its thread path;
* **conch.aio (threads)**: the same with the backend's capability patched to
  ``native_async=False`` (in the measuring process only), i.e. the thread path;
* **conch (sync)**: the sync API as an asyncio user calls it: a non-blocking
  ``acquire(blocking=False)`` and ``release()`` directly on the loop's thread, and,
  when the try fails, ``await asyncio.to_thread(lock.acquire)`` (the loop's default
  executor) for the wait;

then what asyncio users pick instead: redis-py's ``redis.asyncio`` Lock, a
hand-written ``psycopg.AsyncConnection`` + ``pg_advisory_lock``, filelock's
``AsyncFileLock``, and ``asyncio.Lock`` as the in-process floor of ``memory://``.

A contender has two *members* (0 and 1: two coordinators, two clients), so that a
hand-off goes from one member to another as between two processes.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import hashlib
import importlib
from typing import Any, ClassVar, Protocol

import psycopg
import redis
import redis.asyncio
from psycopg.conninfo import make_conninfo

import conch
import conch.aio
from conch.backends.loader import backend_class
from conch.url import parse_url


class AsyncLockLike(Protocol):
    """A lock as the benchmark drives it: awaited acquire (waits until taken), release."""

    async def acquire(self) -> object: ...

    async def release(self) -> object: ...


class AsyncContender(abc.ABC):
    """One way of locking from asyncio, used by one process (its event loop) at a time."""

    name: ClassVar[str]
    distribution: ClassVar[str] = ""
    """The installed distribution whose version the results record."""
    waits: ClassVar[str]
    """How a blocked acquire waits, for the report."""
    floor: ClassVar[bool] = False

    def __init__(self, target: str) -> None:
        """Remember the backend URL; do no I/O."""
        self.target = target

    async def setup(self) -> None:  # noqa: B027 - most contenders need no set-up
        """Connect (on the loop that will use the contender)."""

    @abc.abstractmethod
    def lock(self, name: str, member: int) -> AsyncLockLike:
        """A new lock object for ``name`` of member 0 or 1 (no I/O)."""

    async def teardown(self) -> None:  # noqa: B027
        """Disconnect."""


class ConchAio(AsyncContender):
    """``await conch.aio.connect(url)`` per member; ``coordinator.lock(name)``."""

    name = "conch.aio"
    distribution = "conch"
    waits = "natively on the loop (else as conch.aio (threads))"

    async def setup(self) -> None:
        self._members = [await conch.aio.connect(self.target) for _ in range(2)]

    def lock(self, name: str, member: int) -> AsyncLockLike:
        return self._members[member].lock(name)

    async def teardown(self) -> None:
        for member in self._members:
            await member.stop()


class ConchAioThreads(ConchAio):
    """conch.aio on its thread path: the backend's ``native_async`` patched off."""

    name = "conch.aio (threads)"
    waits = "a conch thread per name"

    async def setup(self) -> None:
        backend = backend_class(parse_url(self.target))
        # Only in this process (forked for this contender): the others see the real one.
        backend.capabilities = dataclasses.replace(backend.capabilities, native_async=False)
        await super().setup()


class _SyncFromLoop:
    """A sync conch lock from a coroutine: tries on the loop, waits on the default executor."""

    def __init__(self, lock: conch.Lock) -> None:
        self._lock = lock

    async def acquire(self) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        return await asyncio.to_thread(self._lock.acquire)

    async def release(self) -> None:
        self._lock.release()


class ConchSync(AsyncContender):
    """``conch.connect(url)`` per member, called from the loop (see the module text)."""

    name = "conch (sync)"
    distribution = "conch"
    waits = "to_thread: a default-executor thread each"

    async def setup(self) -> None:
        self._members = [conch.connect(self.target) for _ in range(2)]

    def lock(self, name: str, member: int) -> AsyncLockLike:
        return _SyncFromLoop(self._members[member].lock(name))

    async def teardown(self) -> None:
        for member in self._members:
            member.stop()


class _AsyncioLock:
    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def acquire(self) -> bool:
        return await self._lock.acquire()

    async def release(self) -> None:
        self._lock.release()


class AsyncioLock(AsyncContender):
    """The in-process floor: one ``asyncio.Lock`` per name, shared by both members."""

    name = "asyncio.Lock"
    waits = "a future"
    floor = True

    async def setup(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, name: str, member: int) -> AsyncLockLike:
        return _AsyncioLock(self._locks.setdefault(name, asyncio.Lock()))


class FileLockAsync(AsyncContender):
    """filelock's ``AsyncFileLock(path)`` with its defaults (one per lock object)."""

    name = "filelock AsyncFileLock"
    distribution = "filelock"
    waits = "polls every 50 ms, tries on the executor"

    def lock(self, name: str, member: int) -> AsyncLockLike:
        path = f"{parse_url(self.target).path}/filelock/{name}.lock"
        lock: AsyncLockLike = async_file_lock()(path)
        return lock


def async_file_lock() -> Any:
    """filelock's ``AsyncFileLock`` class, or ``None`` if the installed filelock lacks it."""
    try:
        return getattr(importlib.import_module("filelock"), "AsyncFileLock", None)
    except ImportError:
        return None


class RedisPyAsyncLock(AsyncContender):
    """redis-py's ``redis.asyncio`` Lock (``client.lock(name, timeout=10)``), one client
    per member, its defaults otherwise."""

    name = "redis.asyncio Lock"
    distribution = "redis"
    waits = "polls every 100 ms"

    async def setup(self) -> None:
        self._clients = [redis.asyncio.Redis.from_url(self.target) for _ in range(2)]

    def lock(self, name: str, member: int) -> AsyncLockLike:
        return self._clients[member].lock(name, timeout=10)

    async def teardown(self) -> None:
        for client in self._clients:
            await client.aclose()


class _AdvisoryLock:
    """What users write by hand: a connection of its own (opened on first use, kept),
    ``SELECT pg_advisory_lock(key)`` to take, ``pg_advisory_unlock`` to give back."""

    def __init__(self, conninfo: str, name: str, connections: list[psycopg.AsyncConnection[Any]]):
        self._conninfo = conninfo
        self._key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self._connections = connections
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def acquire(self) -> bool:
        if self._connection is None:
            self._connection = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True)
            self._connections.append(self._connection)
        await self._connection.execute("SELECT pg_advisory_lock(%s)", (self._key,))
        return True

    async def release(self) -> None:
        assert self._connection is not None, "released without a hold"
        await self._connection.execute("SELECT pg_advisory_unlock(%s)", (self._key,))


class PsycopgAdvisoryLock(AsyncContender):
    """Hand-written: ``psycopg.AsyncConnection`` + ``pg_advisory_lock`` per lock object."""

    name = "psycopg advisory lock (hand-written)"
    distribution = "psycopg"
    waits = "in the server, a connection each"

    async def setup(self) -> None:
        self._conninfo = postgresql_conninfo(self.target)
        self._connections: list[psycopg.AsyncConnection[Any]] = []

    def lock(self, name: str, member: int) -> AsyncLockLike:
        return _AdvisoryLock(self._conninfo, name, self._connections)

    async def teardown(self) -> None:
        for connection in self._connections:
            await connection.close()


def postgresql_conninfo(target: str) -> str:
    """libpq's connection string for a ``postgresql://`` URL of the benchmark."""
    url = parse_url(target)
    host, port = url.hosts[0]
    return make_conninfo("", host=host, port=port, dbname=url.path.lstrip("/"),
                         user=url.username, password=url.password)
