"""``memcached://host:port``: TTL locks on one memcached 1.6 server (docs/memcached.md).
The session owns connections and renewals; the lock handle borrows it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pymemcache.client.base import Client  # type: ignore[import-untyped]

from conch.backends.base import Backend, GroupStore, LockHandle, LossCallback
from conch.backends.memcached import inspection
from conch.backends.memcached.client import lock_keys
from conch.backends.memcached.groups import MemcachedGroupStore
from conch.backends.memcached.semaphore import MemcachedPermit, semaphore_keys
from conch.backends.memcached.session import MemcachedSession
from conch.backends.memcached.shared import MemcachedReader, MemcachedWriter, keeps
from conch.capabilities import Capabilities
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

T = TypeVar("T")


class MemcachedBackend(Backend):
    """Locks as keys with an expiry on one memcached server."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=False, notify=False,
        shared_locks=True, distributed=True, introspection=True, breakable=True,
        groups=True, semaphores=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        self.session = MemcachedSession(url, keeps)

    def connect(self) -> None:
        self.session.connect()

    def close(self) -> None:
        self.session.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        stamp = HolderStamp(key, self.member_id)
        return MemcachedWriter(self.session, lock_keys(key), stamp, on_lost)

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        stamp = HolderStamp(key, self.member_id)
        return MemcachedReader(self.session, lock_keys(key), stamp, on_lost)

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        stamp = HolderStamp(key, self.member_id)
        return MemcachedPermit(self.session, semaphore_keys(key), limit, key, stamp, on_lost)

    def groups(self) -> GroupStore:
        return MemcachedGroupStore(self.session, self.member_id)

    def describe_lock(self, key: bytes) -> LockInfo:
        return self._inspect(lambda client: inspection.describe(client, lock_keys(key), key)[0])

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return self._inspect(inspection.held_locks)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        return self._inspect(
            lambda client: inspection.break_hold(client, lock_keys(key), key, token))

    def _inspect(self, look: Callable[[Client], T]) -> T:
        return self.session.call(lambda client, retried: look(client))
