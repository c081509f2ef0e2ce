"""The ``redis://`` asyncio lock handles: the blocking ones' steps on the running loop's
client. A cancelled acquire whose ACQUIRE may have reached the server frees it before
``CancelledError`` propagates, and a cancelled ``BLPOP`` hands on the signal it may have
taken; both in a task a second cancellation does not stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable

from conch.backends.base import AsyncLockHandle, Deadline, LossCallback
from conch.backends.kit.ttl import new_hold_value
from conch.backends.redis import shared, steps
from conch.backends.redis.async_session import LoopClient, LoopClients
from conch.backends.redis.session import RedisHold
from conch.backends.redis.share_scripts import SharedKeys
from conch.backends.redis.steps import LockKeys, Outcome, Turns, release_call, wait_seconds
from conch.errors import NotStarted
from conch.introspection import HolderStamp

log = logging.getLogger("conch")
_cleanups: set[asyncio.Task[object]] = set()
"""Cleanup tasks still running (the loop keeps only weak references to tasks)."""


class RedisAsyncLock(AsyncLockHandle):
    """One lock object's exclusive hold on a Redis lock, for the event loop that made it;
    while the lock is shared it waits as a writer (as the blocking ``WriterFirstLock``)."""

    def __init__(self, clients: LoopClients, keys: SharedKeys, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._clients, self._session, self._keys = clients, clients.session, keys.lock
        self._shared, self._stamp, self._on_lost = keys, stamp, on_lost
        self._hold: RedisHold | None = None
        self._turns = Turns()

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
                if (seconds := wait_seconds(busy_for, deadline, ttl)) is None:
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
        """ACQUIRE with ``value``, after a wait of ``wait`` seconds unless None; and the
        signal the wait took."""
        client.check_open()
        try:
            if wait is None:
                return await client.acquire(self._keys, value), None
            return await client.wait_and_try(self._keys, wait, value)
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
