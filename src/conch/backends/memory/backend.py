"""``memory://[name]``: locks and groups inside this process, one store per URL as if it
were a server (docs/memory.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from conch.backends.base import AsyncLockHandle, Backend, GroupStore, LockHandle, LossCallback
from conch.backends.memory.lock import EXCLUSIVE, SEMAPHORES, SHARED, MemoryLock, Name, Store
from conch.capabilities import Capabilities
from conch.errors import GroupNotEmpty, GroupNotFound
from conch.introspection import HolderChanged, LockInfo
from conch.url import BackendURL

_stores: dict[str, Store] = {}
_stores_mutex = threading.Lock()


class MemoryBackend(Backend):
    """Locks shared by the coordinators of one process."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True, shared_locks=True,
        distributed=False, introspection=True, breakable=True, native_async=True, groups=True,
        semaphores=True)

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        url.options(())
        with _stores_mutex:
            self._store = _stores.setdefault(
                ",".join(host for host, _ in url.hosts) + url.path, Store())
        self._groups = MemoryGroupStore(self._store, member_id)
        self._closed = threading.Event()

    def connect(self) -> None:
        pass

    def close(self) -> None:
        self._groups.close()
        with self._store.mutex:
            self._closed.set()
            for name in self._store.names.values():  # other coordinators' waiters wait again
                for wake in name.wakers:
                    wake()

    def handle(self, key: bytes, on_lost: LossCallback, limit: int = EXCLUSIVE) -> MemoryLock:
        return MemoryLock(self._store, key, self.member_id, on_lost, self._closed, limit)

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return self.handle(key, on_lost, SHARED)

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        return self.handle(SEMAPHORES + key, on_lost, limit)

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        from conch.backends.memory.async_lock import MemoryAsyncLock  # asyncio, when used

        return MemoryAsyncLock(self.handle(key, on_lost))

    def groups(self) -> GroupStore:
        return self._groups

    def describe_lock(self, key: bytes) -> LockInfo:
        with self._store.mutex:
            name = self._store.names.get(key)
            return LockInfo(key, None, 0) if name is None else _info(key, name)

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        with self._store.mutex:
            return [_info(key, name) for key, name in self._store.names.items()
                    if name.holders and not key.startswith(SEMAPHORES)]

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        with self._store.mutex:
            name = self._store.names.get(key)
            if name is None or not name.holders:
                if token is not None:
                    raise HolderChanged(f"lock {key!r} is no longer held")
                return LockInfo(key, None, 0)
            broken = _info(key, name)
            holders = [holder for holder, info in name.holders.items()
                       if token is None or info.token == token]
            if not holders:
                raise HolderChanged(f"lock {key!r} is held by another hold than token {token}")
            for holder in holders:
                self._store.free(key, name, holder)
        for holder in holders:
            holder.on_lost("the lock was broken (conch break)")
        return broken


def _info(key: bytes, name: Name) -> LockInfo:
    """The lock as ``conch show`` shows it: its oldest holder."""
    holder = min(name.holders.values(), key=lambda info: info.token or 0, default=None)
    return LockInfo(key, holder, len(name.wakers))


class MemoryGroupStore(GroupStore):
    """One coordinator's view of the store's groups; every change is pushed."""

    poll_interval = 60.0

    def __init__(self, store: Store, member_id: str) -> None:
        self._store, self._groups, self._member_id = store, store.groups, member_id

    def create(self, group: bytes) -> bool:
        with self._store.mutex:
            if group in self._groups:
                return False
            self._groups[group] = {}
            return True

    def delete(self, group: bytes) -> None:
        with self._store.mutex:
            entries = self._entries(group)
            if entries:
                raise GroupNotEmpty(f"group {group!r} still has {len(entries)} members")
            del self._groups[group]

    def names(self) -> list[bytes]:
        with self._store.mutex:
            return list(self._groups)

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        with self._store.mutex:
            self._entries(group)[self._member_id] = data
            self._store.group_subscribers.wake([group])

    def leave(self, group: bytes) -> bool:
        with self._store.mutex:
            if self._groups.get(group, {}).pop(self._member_id, None) is None:
                return False
            self._store.group_subscribers.wake([group])
            return True

    def members(self, group: bytes) -> dict[str, bytes] | None:
        with self._store.mutex:
            entries = self._groups.get(group)
            return None if entries is None else dict(entries)

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        return self._store.group_subscribers.subscribe(group, changed)

    def close(self) -> None:
        """The coordinator closed: its entries go."""
        with self._store.mutex:
            left = [group for group, entries in self._groups.items()
                    if entries.pop(self._member_id, None) is not None]
            self._store.group_subscribers.wake(left)

    def _entries(self, group: bytes) -> dict[str, bytes]:  # the store's mutex held
        entries = self._groups.get(group)
        if entries is None:
            raise GroupNotFound(f"group {group!r} does not exist")
        return entries
