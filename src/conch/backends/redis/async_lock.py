"""The ``redis://`` backend's asyncio handle: the blocking handle's steps, awaited.

It sends the same scripts on the same keys as :mod:`conch.backends.redis.backend`
(:mod:`conch.backends.redis.steps`), so blocking and asyncio holders of one name
exclude each other and share its tokens and wake-ups: an acquire runs the ACQUIRE
script, waits in ``BLPOP`` on the name's wake list (the server wakes it, no
polling) and tries again, until its deadline. Calls go through the running loop's
``redis.asyncio`` pool (:mod:`conch.backends.redis.async_client`). Holds are
renewed by the backend's one heartbeat with its blocking holds, and their loss is
reported from its thread.

Cancellation: a cancelled acquire whose ACQUIRE may have reached the server
frees it with RELEASE before ``CancelledError`` propagates (in a task of its own,
so a second cancellation does not stop it); a cancelled ``BLPOP`` holds nothing,
and hands on the wake signal it may have taken, so no other waiter misses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch.backends.base import AsyncLockHandle, Deadline, LossCallback
from conch.backends.redis.async_client import AsyncRedisClient
from conch.backends.redis.client import Command
from conch.backends.redis.errors import describe
from conch.backends.redis.steps import (
    WAKE_SIGNAL_MS,
    LockKeys,
    RedisHold,
    acquire_commands,
    acquire_outcome,
    check_released,
    release_command,
    wait_command,
)
from conch.errors import BackendUnavailable
from conch.introspection import HolderStamp

if TYPE_CHECKING:
    from conch.backends.redis.backend import RedisBackend

log = logging.getLogger("conch")

_TRANSIENT = (RedisConnectionError, RedisTimeoutError)
# Cleanup tasks still running (the loop keeps only weak references to tasks).
_cleanups: set[asyncio.Task[list[object]]] = set()


class RedisAsyncLock(AsyncLockHandle):
    """One lock object's hold on a Redis lock, for the event loop that made it."""

    def __init__(self, backend: RedisBackend, keys: LockKeys, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._backend = backend
        self._keys = keys
        self._stamp = stamp
        self._on_lost = on_lost
        self._hold: RedisHold | None = None

    async def acquire(self, deadline: Deadline) -> int | None:
        backend = self._backend
        while True:
            # A new value per attempt, as the blocking handle does (see there).
            value = backend.new_hold_value(self._stamp)
            sent = time.monotonic()
            token, busy_for = await self._try(value)
            if token is not None:
                self._hold = backend.keep(self._keys, value, sent, self._on_lost)
                return token
            remaining = deadline.remaining()
            if remaining == 0:
                return None
            await self._wait(busy_for if remaining is None else min(busy_for, remaining))

    async def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        self._backend.holds.discard(hold)
        with self._errors():
            client = self._backend.async_client()
            replies = await _retry_once(lambda: client.run([release_command(hold)]))
            check_released(hold, replies[0])

    def abandon(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._backend.holds.discard(hold)
            self._backend.abandon(hold.keys, hold.value)

    async def _try(self, value: bytes) -> tuple[int | None, float]:
        """One attempt to hold the lock with ``value`` (see ``RedisBackend.try_acquire``)."""
        options = self._backend.options
        commands, timeout = acquire_commands(self._keys, value, options)
        with self._errors():
            client = self._backend.async_client()
            try:
                replies = await _retry_once(lambda: client.run(commands, timeout))
                return acquire_outcome(replies, options)
            except BaseException:
                # Failed or cancelled after the script may have run: free what it took.
                hold = RedisHold(self._keys, value, 0.0)
                await _finish(client, [release_command(hold)], self._keys)
                raise

    async def _wait(self, seconds: float) -> None:
        """Until a release signals the name or ``seconds`` pass (``BLPOP``); a broken
        connection ends it early, as in ``RedisBackend.wait_for_release``."""
        timeout = seconds + self._backend.options.socket_timeout
        with self._errors():
            client = self._backend.async_client()
            try:
                reply = (await client.roundtrip([wait_command(self._keys, seconds)],
                                                timeout))[0]
            except _TRANSIENT:
                return
            except asyncio.CancelledError:
                # Its reply may have been the signal of a release, meant for one waiter.
                keys = self._keys
                await _finish(client, [("LPUSH", keys.wake, "1"),
                                       ("PEXPIRE", keys.wake, WAKE_SIGNAL_MS)], keys)
                raise
            if isinstance(reply, RedisError):
                raise reply

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Redis errors in the block leave as :class:`BackendUnavailable`, as the blocking
        handle's do (no credential in their text)."""
        try:
            yield
        except RedisError as exc:
            backend = self._backend
            options = backend.options
            raise BackendUnavailable(
                describe(backend.url, options.where, options.sentinel, exc)) from None


async def _finish(client: AsyncRedisClient, commands: list[Command], keys: LockKeys) -> None:
    """Run ``commands`` to clean up after a failed or cancelled step, in a task that a
    second cancellation of the caller does not stop; a failure is logged, not raised."""
    cleanup = asyncio.ensure_future(client.run(commands))
    _cleanups.add(cleanup)

    def settled(task: asyncio.Task[list[object]]) -> None:
        _cleanups.discard(task)
        failed = task.cancelled() or task.exception() is not None or any(
            isinstance(reply, Exception) for reply in task.result())
        if failed:
            log.warning("could not clean up lock key %s after a failed or cancelled step; "
                        "what it may have taken expires (a hold: within the TTL)",
                        keys.holder.decode())

    cleanup.add_done_callback(settled)
    with contextlib.suppress(Exception):
        await asyncio.shield(cleanup)


async def _retry_once(call: Callable[[], Awaitable[list[object]]]) -> list[object]:
    """``await call()``, once more after a connection failure: only for idempotent steps."""
    try:
        return await call()
    except _TRANSIENT:
        return await call()
