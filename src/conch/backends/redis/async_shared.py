"""The ``redis://`` asyncio exclusive handle that, as the blocking one (``shared.py``),
waits as a writer once it has waited a first short turn on a lock with shared holders:
the same scripts, sent on the running loop's client; the entry renewed by the
coordinator's share session."""

from __future__ import annotations

import secrets
import time

from conch.backends.base import AsyncLockHandle, Deadline
from conch.backends.redis import share_scripts as scripts
from conch.backends.redis.async_lock import _finish
from conch.backends.redis.async_session import LoopClient, LoopClients, within
from conch.backends.redis.share_scripts import Entry, SharedKeys
from conch.backends.redis.share_session import EntryHold, ShareSession
from conch.backends.redis.shared import FIRST_TURN, turn_of, waiting_entry_lost


class AsyncWriterFirstLock(AsyncLockHandle):
    """The exclusive asyncio handle of a lock, waiting as a writer while it is shared."""

    def __init__(self, exclusive: AsyncLockHandle, clients: LoopClients, share: ShareSession,
                 keys: SharedKeys) -> None:
        self._exclusive, self._clients, self._share, self._keys = (
            exclusive, clients, share, keys)

    async def acquire(self, deadline: Deadline) -> int | None:
        token = await self._exclusive.acquire(turn_of(deadline, FIRST_TURN))
        waiting: EntryHold | None = None
        try:
            while token is None and not deadline.expired():
                waiting = waiting or await self._wait_as_writer(self._clients.running())
                token = await self._exclusive.acquire(
                    turn_of(deadline, self._share.session.options.ttl))
        finally:
            if waiting is not None:
                self._share.ttl.discard(waiting)
                if not self._share.session.closed:  # else the entry expires within the TTL
                    await _finish(self._stop_waiting(waiting.value), self._keys.lock)
        return token

    async def release(self) -> None:
        await self._exclusive.release()

    def abandon(self) -> None:
        self._exclusive.abandon()

    async def _wait_as_writer(self, client: LoopClient) -> EntryHold | None:
        """Enter the waiting writers if the lock has shared holders."""
        keys, options = self._keys, self._share.session.options
        member, sent = secrets.token_hex(16).encode(), time.monotonic()
        script = client.redis.register_script(scripts.WRITER_WAITS)
        with client.calls():
            if not await within(options.socket_timeout, script(
                    keys=[keys.readers, keys.writers], args=[member, options.ttl_ms])):
                return None
        return self._share.ttl.keep(Entry(keys.writers, keys.writers, b""), member, sent,
                                    waiting_entry_lost)

    async def _stop_waiting(self, member: bytes) -> None:
        client, keys = self._clients.running(), self._keys
        script = client.redis.register_script(scripts.WRITER_DONE)
        await within(self._share.session.options.socket_timeout, script(
            keys=[keys.writers, keys.readers_wake], args=[member]))
