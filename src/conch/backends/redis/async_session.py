"""One coordinator's asyncio side of ``redis://``: a ``redis.asyncio`` client (and pool) per
event loop, since a connection belongs to the loop that opened it; each call has its own
timeout. Holds are kept by the blocking session's TTL session, as blocking ones are."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch.backends.kit.errors import translated
from conch.backends.kit.fork import forget_in_child
from conch.backends.redis import steps
from conch.backends.redis.session import TRANSIENT, RedisSession
from conch.backends.redis.steps import LockKeys, Outcome, ScriptCall
from conch.errors import NotStarted

T = TypeVar("T")


class LoopClient:
    """The ``redis.asyncio`` client of one event loop, sending the session's scripts.
    Its steps are :class:`RedisSession`'s; the caller frees what a failed acquire took."""

    def __init__(self, session: RedisSession) -> None:
        self.session = session
        self.redis, self._sentinels = session.options.async_client()
        self._scripts = session.scripts  # registered on the blocking client: their SHAs
        self.closing: asyncio.Future[Any] | None = None

    def check_open(self) -> None:
        """Raise :class:`NotStarted` once the coordinator stops."""
        if self.closing is not None or self.session.closed:
            raise NotStarted("the coordinator of this lock was stopped")

    def calls(self) -> contextlib.AbstractContextManager[None]:
        """Redis errors in the block leave as :class:`BackendUnavailable`."""
        self.check_open()
        return translated(self.session.url, (RedisError,), self.session.describe)

    async def acquire(self, keys: LockKeys, value: bytes, retrying: bool = False) -> Outcome:
        self.check_open()
        options = self.session.options
        outcome = steps.acquire_outcome(await self.run(
            steps.acquire_call(keys, value, options.ttl_ms, retrying),
            steps.acquire_call(keys, value, options.ttl_ms, True)), options.ttl)
        if outcome[0] is not None and options.wait_replicas:
            steps.check_replicas(await within(options.socket_timeout + options.ttl / 3,
                                              self.redis.wait(options.wait_replicas,
                                                              options.ttl_ms // 3)), options)
        return outcome

    async def wait_and_try(self, keys: LockKeys, seconds: float,
                           value: bytes) -> tuple[Outcome, bytes | None]:
        options = self.session.options
        source, script_keys, args = steps.acquire_call(keys, value, options.ttl_ms, False)
        try:
            async with self.redis.pipeline(transaction=False) as pipeline:
                pipeline.blpop([keys.wake], seconds)
                pipeline.evalsha(self._scripts[source].sha, len(script_keys), *script_keys, *args)
                replies = steps.checked(await within(seconds + options.socket_timeout,
                                                     pipeline.execute(False)))
        except TRANSIENT:
            return await self.acquire(keys, value, retrying=True), None
        if replies is None:
            await within(options.socket_timeout, self.redis.script_load(steps.ACQUIRE))
            return await self.acquire(keys, value), None
        outcome, signal = steps.outcome_after_wait(replies, options.ttl)
        if outcome[0] is not None and options.wait_replicas:
            return await self.acquire(keys, value, retrying=True), signal  # then WAIT
        return outcome, signal

    async def run(self, call: ScriptCall, again: ScriptCall | None = None) -> Any:
        """``EVALSHA`` of ``call``, or of ``again`` (default: ``call``) on a fresh connection
        after a failure; the script loaded again if the server lost it (a restart)."""
        seconds = self.session.options.socket_timeout
        try:
            return await within(seconds, self._evalsha(call))
        except TRANSIENT:
            return await within(seconds, self._evalsha(again or call))

    async def _evalsha(self, call: ScriptCall) -> Any:
        source, keys, args = call
        try:
            return await self.redis.evalsha(self._scripts[source].sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(source)
            return await self.redis.evalsha(self._scripts[source].sha, len(keys), *keys, *args)

    def start_closing(self) -> asyncio.Future[Any]:
        """Begin closing every connection (on this client's loop); the closing, to await."""
        if self.closing is None:
            closing = [self.redis.aclose()]
            if self._sentinels is not None:
                closing.append(self._sentinels.aclose())
            # A connection that fails to close cleanly is closed all the same.
            self.closing = asyncio.ensure_future(asyncio.gather(*closing,
                                                                return_exceptions=True))
        return self.closing


class LoopClients:
    """A coordinator's :class:`LoopClient` of each event loop. Thread-safe."""

    def __init__(self, session: RedisSession) -> None:
        self.session = session
        self._mutex = threading.Lock()
        # Not a WeakKeyDictionary: a client's connections refer to their loop, so its
        # entry would never go. Clients of closed loops are dropped instead.
        self._clients: dict[asyncio.AbstractEventLoop, LoopClient] = {}
        forget_in_child(self)

    def forget_parent(self) -> None:
        """In a forked child: the parent's event loops, and their connections, are not ours."""
        self._mutex, self._clients = threading.Lock(), {}

    def running(self) -> LoopClient:
        """The running loop's client (made on first use)."""
        loop = asyncio.get_running_loop()
        with self._mutex:
            if loop not in self._clients:
                for closed in [loop for loop in self._clients if loop.is_closed()]:
                    del self._clients[closed]
                self._clients[loop] = LoopClient(self.session)
            return self._clients[loop]

    async def close_running(self) -> None:
        """Close the running loop's client: every connection it opened is closed on return."""
        with self._mutex:
            client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await asyncio.shield(client.start_closing())

    def close(self) -> None:
        """Start closing each client on its loop, if that loop runs (its
        :meth:`close_running` waits for it); those of closed loops are left to the
        garbage collector."""
        with self._mutex:
            for loop, client in self._clients.items():
                if loop.is_running():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(client.start_closing)


async def within(seconds: float, call: Awaitable[T]) -> T:
    """``await call``, raising redis-py's :class:`TimeoutError` after ``seconds``.

    A cancellation that redis-py lost (on Python 3.11 a command cancelled as its reply
    arrives may return normally: ``asyncio.wait_for`` under it drops the cancellation;
    docs/redis.md) is raised here, so the caller frees what the command took."""
    cancelling = getattr(asyncio.current_task(), "cancelling", lambda: 0)
    before = cancelling()
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                result = await call
        else:
            result = await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError:
        raise RedisTimeoutError(f"no reply within {seconds:.3f} s") from None
    if cancelling() > before:
        raise asyncio.CancelledError
    return result
