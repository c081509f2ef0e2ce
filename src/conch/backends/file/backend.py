"""``file:///dir[?sweep_after=seconds]``: kernel ``flock`` locks on a file per name in a
directory of this host, Linux only (docs/file.md)."""

from __future__ import annotations

import contextlib
import os
import threading

from conch.backends.base import AsyncLockHandle, Backend, GroupStore, LockHandle, LossCallback
from conch.backends.file import inspection
from conch.backends.file.groups import FileGroupStore
from conch.backends.file.lock import FileLock, LockFile
from conch.backends.file.semaphore import SEMAPHORES, Permits
from conch.backends.file.session import FileSession
from conch.backends.kit.errors import translated
from conch.capabilities import Capabilities
from conch.errors import InvalidURL, NotSupported
from conch.introspection import LockInfo
from conch.url import BackendURL


class FileBackend(Backend):
    """Locks in a directory of this host."""

    capabilities = Capabilities(
        session_bound=True, fencing=True, fifo=False, notify=True,
        shared_locks=True, distributed=False, introspection=True, breakable=False,
        native_async=True, groups=True, semaphores=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        url.options({"sweep_after"})
        if url.hosts not in ((), (("localhost", None),)):
            raise InvalidURL(f"file:// URLs take no host, use file:///absolute/dir: {url}")
        if not url.path.startswith("/") or url.path == "/":
            raise InvalidURL(f"file:// URLs need an absolute directory, as file:///dir: {url}")
        self.directory = url.path
        self.session = FileSession(self.directory, url.float_option("sweep_after", 300.0))
        self._semaphores = FileSession(os.path.join(self.directory, SEMAPHORES),
                                       self.session.sweep_after)  # opened by the first one
        self._semaphores_mutex, self._semaphores_opened = threading.Lock(), False
        self._groups: FileGroupStore | None = None

    def connect(self) -> None:
        with self._translated("use"):
            self.session.open()

    def close(self) -> None:
        if self._groups is not None:
            self._groups.close()
        self.session.close()
        with self._semaphores_mutex:  # not while the first semaphore opens it
            self._semaphores.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return FileLock(LockFile(self.session, key, self.member_id, on_lost))

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return FileLock(LockFile(self.session, key, self.member_id, on_lost, shared=True))

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        with self._semaphores_mutex, self._translated("use"):
            if not self._semaphores_opened:
                self._semaphores.open()  # OSError when unusable
                self._semaphores_opened = True
        return FileLock(Permits(self._semaphores, key, limit, self.member_id, on_lost))

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        from conch.backends.file.async_lock import FileAsyncLock  # asyncio, when used

        return FileAsyncLock(LockFile(self.session, key, self.member_id, on_lost))

    def groups(self) -> GroupStore:
        self._groups = FileGroupStore(self.directory, self.member_id)
        return self._groups

    def describe_lock(self, key: bytes) -> LockInfo:
        with self._translated("inspect"):
            return inspection.describe(self.session.lock_path(key), key)

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        with self._translated("inspect"):
            return inspection.held_locks(self.directory)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        holder = self.describe_lock(key).holder
        pid = f" (pid {holder.pid})" if holder is not None and holder.pid else ""
        raise NotSupported(
            "file:// locks are kernel flocks: only the holding process can release one; "
            f"stop the holder{pid} instead, and the kernel frees its locks"
        )

    def _translated(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return translated(self.url, (OSError,),
                          lambda exc: f"cannot {doing} lock directory {self.directory}: {exc}")
