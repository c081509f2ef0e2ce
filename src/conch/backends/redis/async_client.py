"""The ``redis://`` backend's asyncio connections: one ``redis.asyncio`` pool per event loop.

A ``redis.asyncio`` connection belongs to the event loop that opened it, and one
coordinator may serve several loops (successive ``asyncio.run`` calls, or a loop
per thread), so :class:`AsyncClients` keeps a pool per loop. Each is made from the
URL's settings as the blocking pool is (:class:`~conch.backends.redis.client.PoolSettings`:
database, credentials, TLS, timeouts, Sentinel), with redis-py's retries off too,
and each call has its own reply timeout, as in :class:`~conch.backends.redis.client.RedisClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis.asyncio
import redis.asyncio.sentinel
import redis.backoff
from redis.asyncio.retry import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch.backends.redis.client import Command, PoolSettings, RedisOptions
from conch.backends.redis.scripts import ALL as ALL_SCRIPTS
from conch.errors import NotStarted
from conch.url import BackendURL

T = TypeVar("T")


class AsyncRedisClient:
    """Connections to the master ``url`` names, for the loop that made this client.

    It keeps its own idle connections rather than use the ``redis.asyncio`` pool's
    checkout (an asyncio lock, a health probe and a timer task per call): the pool
    only makes the connections (and finds the master through Sentinel). A
    connection goes back to the idle ones only after a complete exchange, so a
    failed, timed-out or cancelled call never leaves a reply for the next one.
    """

    def __init__(self, url: BackendURL, options: RedisOptions) -> None:
        self.options = options
        self._factory, self._sentinel = _make_pool(url, options)
        self._idle: list[Any] = []  # redis-py's asyncio Connection is only partly annotated
        self._busy: set[Any] = set()
        self._closing: asyncio.Future[None] | None = None

    async def roundtrip(self, commands: Sequence[Command],
                        timeout: float | None = None) -> list[object]:
        """Send ``commands`` in one write and return their replies, in order.

        As :meth:`RedisClient.roundtrip`: a refused command has its :class:`ResponseError`
        as reply; waits at most ``timeout`` (default ``socket_timeout``) for the replies,
        plus ``connect_timeout`` when it connects first. Raises :class:`NotStarted` once
        closing.
        """
        if self._closing is not None:
            raise NotStarted("the coordinator of this lock was stopped")
        seconds = self.options.socket_timeout if timeout is None else timeout
        connection = self._idle.pop() if self._idle else self._new_connection()
        if not connection.is_connected:
            seconds += self.options.connect_timeout
        self._busy.add(connection)
        try:
            replies = await _within(seconds, _exchange(connection, commands))
        except BaseException as exc:
            if isinstance(exc, RedisConnectionError):
                # A server restart or a failover: the idle connections are stale too.
                self._idle, stale = [], self._idle
                for idle in stale:
                    await idle.disconnect(nowait=True)
            await connection.disconnect(nowait=True)
            raise
        finally:
            self._busy.discard(connection)
        self._idle.append(connection)
        return replies

    def _new_connection(self) -> Any:
        return self._factory.make_connection()  # type: ignore[no-untyped-call]

    async def run(self, commands: Sequence[Command],
                  timeout: float | None = None) -> list[object]:
        """:meth:`roundtrip`, loading the scripts first when the server lost them."""
        replies = await self.roundtrip(commands, timeout)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # A restart or SCRIPT FLUSH emptied the script cache; EVALSHA ran nothing.
            for reply in await self.roundtrip([script.load() for script in ALL_SCRIPTS]):
                if isinstance(reply, Exception):
                    raise reply
            replies = await self.roundtrip(commands, timeout)
        return replies

    def start_closing(self) -> asyncio.Future[None]:
        """Begin closing every connection (on this client's loop); the closing, to await."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        return self._closing

    async def _close(self) -> None:
        connections, self._idle = [*self._idle, *self._busy], []
        # A connection that fails to close cleanly is closed all the same: nothing to report.
        await asyncio.gather(*(connection.disconnect() for connection in connections),
                             return_exceptions=True)
        if self._sentinel is not None:
            await asyncio.gather(self._sentinel.aclose(), return_exceptions=True)


class AsyncClients:
    """A backend's :class:`AsyncRedisClient` of each event loop. Thread-safe."""

    def __init__(self, url: BackendURL, options: RedisOptions) -> None:
        self._url = url
        self._options = options
        self._mutex = threading.Lock()
        # Not a WeakKeyDictionary: a client's connections refer to their loop, so its
        # entry would never go. Clients of closed loops are dropped instead.
        self._clients: dict[asyncio.AbstractEventLoop, AsyncRedisClient] = {}

    def running(self) -> AsyncRedisClient:
        """The running loop's client (made on first use)."""
        loop = asyncio.get_running_loop()
        with self._mutex:
            client = self._clients.get(loop)
            if client is None:
                self._drop_closed_loops()
                client = self._clients[loop] = AsyncRedisClient(self._url, self._options)
            return client

    async def close_running(self) -> None:
        """Close the running loop's client: every connection it opened is closed on return."""
        with self._mutex:
            client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await asyncio.shield(client.start_closing())

    def close(self) -> None:
        """Start closing every client on its loop, if that loop runs (its
        :meth:`close_running` waits for it); drop those of closed loops (their sockets are
        closed when garbage collected)."""
        with self._mutex:
            self._drop_closed_loops()
            for loop, client in self._clients.items():
                if loop.is_running():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(client.start_closing)

    def _drop_closed_loops(self) -> None:
        for loop in [loop for loop in self._clients if loop.is_closed()]:
            del self._clients[loop]


async def _exchange(connection: Any, commands: Sequence[Command]) -> list[object]:
    if not connection.is_connected:
        await connection.connect()
    await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
    replies: list[object] = []
    for _ in commands:
        try:
            # No timeout of its own (math.inf): the caller's bounds the whole exchange.
            replies.append(await connection.read_response(timeout=math.inf))
        except ResponseError as refused:
            replies.append(refused)
    return replies


async def _within(seconds: float, call: Awaitable[T]) -> T:
    """``await call``, raising redis-py's :class:`TimeoutError` after ``seconds``."""
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                return await call
        return await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError:
        raise RedisTimeoutError(f"no reply within {seconds:.3f} s") from None


def _make_pool(url: BackendURL, options: RedisOptions) -> tuple[
    redis.asyncio.ConnectionPool, redis.asyncio.sentinel.Sentinel | None
]:
    """The pool that makes the connections, and the sentinel client it asks for the master
    (``None``: no Sentinel)."""
    settings = PoolSettings.from_url(url, options)
    # No socket timeout: each exchange has its own bound (with one, redis-py would also
    # start a task per write to time it).
    connection = {**settings.connection, "socket_timeout": None,
                  "retry": Retry(redis.backoff.NoBackoff(), 0)}
    if options.sentinel is None:
        host, port = settings.hosts[0]
        if settings.tls:
            connection["connection_class"] = redis.asyncio.SSLConnection
        return redis.asyncio.ConnectionPool(host=host, port=port, **connection), None
    sentinel = redis.asyncio.sentinel.Sentinel(
        settings.hosts,
        sentinel_kwargs={**settings.sentinel, "retry": Retry(redis.backoff.NoBackoff(), 0)},
    )
    pool = redis.asyncio.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
        options.sentinel, sentinel, ssl=settings.tls, **connection
    )
    return pool, sentinel
