"""``redis://`` and ``rediss://`` (TLS): TTL locks on a Redis master, found through Sentinel
if asked. How the contract maps onto keys and scripts, restarts and failovers: docs/redis.md."""

from __future__ import annotations

from conch.backends.base import AsyncLockHandle, Backend, GroupStore, LockHandle, LossCallback
from conch.backends.redis import inspection
from conch.backends.redis.async_lock import RedisAsyncLock
from conch.backends.redis.async_session import LoopClients
from conch.backends.redis.client import RedisOptions
from conch.backends.redis.groups import RedisGroupStore
from conch.backends.redis.session import RedisSession
from conch.backends.redis.share_scripts import permit_keys, shared_keys
from conch.backends.redis.shared import EntryLock, WriterFirstLock, permit_kind, shared_kind
from conch.backends.redis.steps import lock_keys
from conch.capabilities import Capabilities
from conch.errors import NotStarted
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL


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
            return inspection.describe(self.session.commands, lock_keys(key), key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        with self.session.calls():
            return inspection.held_locks(self.session.commands)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        with self.session.calls():
            return inspection.break_hold(self.session, lock_keys(key), key, token)
