"""``redis://`` and ``rediss://`` (TLS): TTL locks on a Redis master, found through Sentinel
if asked, and who holds them (``conch show`` / ``conch break``). Design: docs/redis.md."""

from __future__ import annotations

from typing import Any

import redis

from conch import introspection
from conch.backends.base import AsyncLockHandle, Backend, GroupStore, LockHandle, LossCallback
from conch.backends.redis.async_lock import LoopClients, RedisAsyncLock
from conch.backends.redis.client import RedisOptions
from conch.backends.redis.groups import RedisGroupStore
from conch.backends.redis.session import RedisSession
from conch.backends.redis.share_scripts import permit_keys, shared_keys
from conch.backends.redis.shared import EntryLock, WriterFirstLock, permit_kind, shared_kind
from conch.backends.redis.steps import KEY_PREFIX, lock_keys, release_call
from conch.capabilities import Capabilities
from conch.errors import NotStarted
from conch.introspection import HolderChanged, HolderInfo, HolderStamp, LockInfo, read_stamp
from conch.url import BackendURL

_BATCH = 500
"""Keys per ``SCAN`` step and per pipelined batch of reads."""


class RedisBackend(Backend):
    """Locks on a Redis master: a key per hold with a TTL, renewed by the coordinator."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=False, notify=True, shared_locks=True,
        distributed=True, introspection=True, breakable=True, native_async=True,
        groups=True, semaphores=True)

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        self.options = RedisOptions.from_url(url)
        self._session: RedisSession | None = None
        self._loop_clients: LoopClients | None = None
        self._groups: RedisGroupStore | None = None

    @property
    def session(self) -> RedisSession:
        """The started session; :class:`NotStarted` before ``connect()`` or after ``close()``."""
        if self._session is None or self._session.closed:
            raise NotStarted("the coordinator of this lock was stopped")
        return self._session

    def connect(self) -> None:
        session = RedisSession(self.url, self.options)
        session.start()
        self._session, self._loop_clients = session, LoopClients(session)

    def close(self) -> None:
        if self._groups is not None:
            self._groups.close()
        if self._session is not None and self._loop_clients is not None:
            self._session.close()
            self._loop_clients.close()

    async def close_async(self) -> None:
        if self._loop_clients is not None:
            await self._loop_clients.close_running()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        assert self._session is not None, "connect() first"
        return WriterFirstLock(self._session, shared_keys(lock_keys(key)),
                               HolderStamp(key, self.member_id), on_lost)

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        assert self._session is not None, "connect() first"
        return EntryLock(self._session, shared_kind(shared_keys(lock_keys(key))),
                         HolderStamp(key, self.member_id), on_lost)

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        assert self._session is not None, "connect() first"
        return EntryLock(self._session, permit_kind(permit_keys(key), limit, key),
                         HolderStamp(key, self.member_id), on_lost)

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        assert self._loop_clients is not None, "connect() first"
        return RedisAsyncLock(self._loop_clients, shared_keys(lock_keys(key)),
                              HolderStamp(key, self.member_id), on_lost)

    def groups(self) -> GroupStore:
        self._groups = RedisGroupStore(self.session, self.member_id)
        return self._groups

    def describe_lock(self, key: bytes) -> LockInfo:
        with self.session.calls():
            return self._read_lock(key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        """Every lock held on the server: a ``SCAN`` of the holder keys, then their values."""
        found: list[LockInfo] = []
        cursor = 0
        with self.session.calls():
            while True:
                cursor, holder_keys = self.session.commands.scan(
                    cursor, match=KEY_PREFIX + b"*:holder", count=_BATCH)
                replies = _read(self.session.commands, holder_keys)
                for at in range(0, len(replies), 3):
                    value, pttl, counter = replies[at: at + 3]
                    stamp = read_stamp(_stamp_part(value)) if isinstance(value, bytes) else None
                    if stamp is not None:  # else released since the SCAN
                        found.append(LockInfo(stamp.key, _holder(value, pttl, counter)))
                if not cursor:
                    return found

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        """Delete the hold (only the one with ``token``, if given) with RELEASE."""
        with self.session.calls():
            lock, value = self._read_lock(key)
            if not introspection.has_hold_to_break(lock, token) or value is None:
                return lock
            if not self.session.run(release_call(lock_keys(key), value)):
                raise HolderChanged(f"lock {lock.name!r} changed holder while it was being broken")
            return lock

    def _read_lock(self, key: bytes) -> tuple[LockInfo, bytes | None]:
        """Lock ``key`` and its holder key's value (None: free)."""
        value, pttl, counter = _read(self.session.commands, [lock_keys(key).holder])
        if not isinstance(value, bytes):
            return LockInfo(key, None), None
        return LockInfo(key, _holder(value, pttl, counter)), value


def _read(client: redis.Redis, holder_keys: list[Any]) -> list[Any]:
    """Value, ``PTTL`` and token of each holder key, in one round-trip."""
    pipeline = client.pipeline(transaction=False)
    for holder_key in holder_keys:
        pipeline.get(holder_key)
        pipeline.pttl(holder_key)
        pipeline.get(holder_key[: -len(b"holder")] + b"token")
    return pipeline.execute() if holder_keys else []


def _holder(value: bytes, pttl: object, counter: object) -> HolderInfo:
    token = int(counter) if isinstance(counter, bytes) and counter.isdigit() else None
    ttl_left = pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None
    stamp = read_stamp(_stamp_part(value))  # None: a value from before stamps, or by hand
    return HolderInfo(token=token, ttl_left=ttl_left) if stamp is None else \
        stamp.holder(token=token, ttl_left=ttl_left)


def _stamp_part(value: bytes) -> bytes:
    return value.partition(b" ")[2]
