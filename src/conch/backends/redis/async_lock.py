"""The ``redis://`` asyncio side: a ``redis.asyncio`` client per event loop (a connection
belongs to the loop that opened it) and the lock handle sending the blocking one's steps on
it. A cancelled step frees what it may have taken in a task a second cancellation does not
stop. Holds are renewed by the blocking session's TTL session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch.backends.base import AsyncLockHandle, Deadline, LossCallback
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.ttl import new_hold_value
from conch.backends.redis import shared, steps
from conch.backends.redis.session import TRANSIENT, RedisHold, RedisSession
from conch.backends.redis.share_scripts import SharedKeys
from conch.backends.redis.steps import LockKeys, Outcome, ScriptCall, release_call
from conch.errors import NotStarted
from conch.introspection import HolderStamp

log = logging.getLogger("conch")
T = TypeVar("T")
_cleanups: set[asyncio.Task[object]] = set()
"""Cleanup tasks still running (the loop keeps only weak references to tasks)."""


class LoopClient:
    """The ``redis.asyncio`` client of one event loop, sending the session's scripts."""

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
        return self.session.calls()

    async def try_acquire(self, keys: LockKeys, value: bytes,
                          wait: float | None) -> tuple[Outcome, bytes | None]:
        """ACQUIRE with ``value``, after a ``BLPOP`` of ``wait`` seconds unless None (in the
        same round-trip, as the blocking session's); and the signal the wait took."""
        options, outcome, signal = self.session.options, None, None
        if wait is not None:
            source, script_keys, args = steps.acquire_call(keys, value, options.ttl_ms, False)
            with contextlib.suppress(*TRANSIENT):  # then the attempt is made (or found) anew
                async with self.redis.pipeline(transaction=False) as pipeline:
                    pipeline.blpop([keys.wake], wait)
                    pipeline.evalsha(self._scripts[source].sha, len(script_keys), *script_keys,
                                     *args)
                    replies = await within(wait + options.socket_timeout, pipeline.execute(False))
                outcome, signal = steps.outcome_after_wait(steps.checked(replies), options)
        if outcome is None:
            self.check_open()  # a wait ended by close_running()
            outcome = steps.acquire_outcome(await self.run(
                steps.acquire_call(keys, value, options.ttl_ms, wait is not None),
                steps.acquire_call(keys, value, options.ttl_ms, True)), options.ttl)
            if outcome[0] is not None and options.wait_replicas:
                steps.check_replicas(await within(options.socket_timeout + options.ttl / 3,
                                                  self.redis.wait(options.wait_replicas,
                                                                  options.ttl_ms // 3)), options)
        return outcome, signal

    async def run(self, call: ScriptCall, again: ScriptCall | None = None) -> Any:
        """``EVALSHA`` of ``call``; of ``again`` (or ``call``) after a connection failure."""
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
        """Begin closing every connection (on this loop); the closing, to await."""
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
        """Start closing each client on its loop, if running (:meth:`close_running` waits)."""
        with self._mutex:
            for loop, client in self._clients.items():
                if loop.is_running():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(client.start_closing)


async def within(seconds: float, call: Awaitable[T]) -> T:
    """``await call``, raising redis-py's :class:`TimeoutError` after ``seconds``, and a
    cancellation that redis-py lost (Python 3.11, docs/redis.md) so that the caller frees
    what the command took."""
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


class RedisAsyncLock(AsyncLockHandle):
    """One lock object's exclusive hold, for its event loop: as ``shared.WriterFirstLock``."""

    def __init__(self, clients: LoopClients, keys: SharedKeys, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._clients, self._session, self._keys = clients, clients.session, keys.lock
        self._shared, self._stamp, self._on_lost = keys, stamp, on_lost
        self._hold: RedisHold | None = None
        self._turns = steps.Turns()

    async def acquire(self, deadline: Deadline) -> int | None:
        token = await self._acquire_turn(shared.turn_of(deadline, shared.FIRST_TURN))
        session, waiting = self._session, None
        try:
            while token is None and not deadline.expired():
                if waiting is None:
                    call, member, sent = shared.writer_waits(session, self._shared)
                    client = self._clients.running()
                    with client.calls():
                        entered = await client.run(call)
                    waiting = shared.keep_waiting(session, self._shared, member, sent, entered)
                token = await self._acquire_turn(shared.turn_of(deadline, session.options.ttl))
        finally:
            if (done := shared.stop_waiting(session, self._shared, waiting)) is not None:
                await _finish(self._clients.running().run(done), self._keys)
        return token

    async def _acquire_turn(self, deadline: Deadline) -> int | None:
        """ACQUIRE, and while the lock is busy ``BLPOP`` and again, until ``deadline``."""
        client, ttl = self._clients.running(), self._session.options.ttl
        with client.calls():  # as the blocking handle, awaited (see there)
            value, sent = new_hold_value(self._stamp), time.monotonic()
            (token, busy_for), signal = await self._attempt(
                client, value, self._turns.first_wait(deadline, ttl))
            met_holder = token is None
            while token is None:
                if (seconds := steps.wait_seconds(busy_for, deadline, ttl)) is None:
                    return None
                value, sent = new_hold_value(self._stamp), time.monotonic()
                (token, busy_for), _ = await self._attempt(client, value, seconds)
        self._turns.acquired(met_holder, signal)
        self._hold = self._session.ttl.keep(self._keys, value, sent, self._on_lost)
        return token

    async def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        self._session.ttl.discard(hold)
        client = self._clients.running()
        with client.calls():
            steps.check_released(self._keys, await client.run(release_call(self._keys, hold.value)))
        self._turns.released(hold.value)

    def abandon(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._session.ttl.discard(hold)
            self._session.abandon(release_call(hold.keys, hold.value))

    async def _attempt(self, client: LoopClient, value: bytes,
                       wait: float | None) -> tuple[Outcome, bytes | None]:
        """:meth:`LoopClient.try_acquire`, freeing what it may hold if it fails."""
        client.check_open()
        try:
            return await client.try_acquire(self._keys, value, wait)
        except NotStarted:  # the coordinator stopped, this loop's client with it
            self._session.abandon(release_call(self._keys, value))
            raise
        except BaseException:  # failed or cancelled after the script may have run
            await _finish(self._undo(client, value, wait is not None), self._keys)
            raise

    async def _undo(self, client: LoopClient, value: bytes, waited: bool) -> None:
        """Free what the attempt with ``value`` may hold; after a wait that did not get
        the lock, leave the wake signal it may have taken for another waiter."""
        if not await client.run(release_call(self._keys, value)) and waited:
            async with client.redis.pipeline(transaction=False) as pipeline:
                pipeline.lpush(self._keys.wake, "1")
                pipeline.pexpire(self._keys.wake, steps.WAKE_SIGNAL_MS)
                await pipeline.execute()


async def _finish(cleanup: Awaitable[object], keys: LockKeys) -> None:
    """Run ``cleanup`` in a task that a second cancellation of the caller does not stop;
    a failure is logged, not raised."""
    task = asyncio.ensure_future(cleanup)
    _cleanups.add(task)

    def settled(task: asyncio.Task[object]) -> None:
        _cleanups.discard(task)
        if task.cancelled() or task.exception() is not None:
            log.warning("could not clean up lock key %s after a failed or cancelled step; "
                        "what it may have taken expires (a hold: within the TTL)",
                        keys.holder.decode())

    task.add_done_callback(settled)
    with contextlib.suppress(Exception):
        await asyncio.shield(task)
