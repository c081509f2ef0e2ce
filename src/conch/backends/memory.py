"""``memory://[name]``: locks inside this process, for tests and examples.

Every coordinator of the process with the same URL shares one store, as if it
were a server. A waiter sleeps on the name's condition variable and is woken by
the release.
"""

from __future__ import annotations

import itertools
import threading

from conch.backends.base import Backend, Deadline, LockHandle, LossCallback
from conch.capabilities import Capabilities
from conch.url import BackendURL


class _Name:
    """One name's holder and the waiters to wake when it is freed."""

    def __init__(self, mutex: threading.Lock) -> None:
        self.holder: object | None = None
        self.waiters = 0
        self.freed = threading.Condition(mutex)


class _Store:
    """The state a server would keep: the names in use and one token counter."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.tokens = itertools.count(1)
        self.names: dict[bytes, _Name] = {}


_stores: dict[str, _Store] = {}
_stores_mutex = threading.Lock()


class MemoryBackend(Backend):
    """Locks shared by the coordinators of one process."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True,
        shared_locks=False, distributed=False,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        url.options(())
        store_name = ",".join(host for host, _ in url.hosts) + url.path
        with _stores_mutex:
            self._store = _stores.setdefault(store_name, _Store())

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return _MemoryLock(self._store, key)


class _MemoryLock(LockHandle):
    def __init__(self, store: _Store, key: bytes) -> None:
        self._store = store
        self._key = key

    def acquire(self, deadline: Deadline) -> int | None:
        store = self._store
        with store.mutex:
            name = store.names.get(self._key)
            if name is None:
                name = store.names[self._key] = _Name(store.mutex)
            while name.holder is not None:
                remaining = deadline.remaining()
                if remaining == 0:
                    return None
                name.waiters += 1
                try:
                    name.freed.wait(remaining)
                finally:
                    name.waiters -= 1
            name.holder = self
            return next(store.tokens)

    def release(self) -> None:
        with self._store.mutex:
            name = self._store.names.get(self._key)
            if name is not None and name.holder is self:
                name.holder = None
                name.freed.notify()
                self._forget_if_unused(name)

    def _forget_if_unused(self, name: _Name) -> None:
        if name.holder is None and name.waiters == 0:
            del self._store.names[self._key]
