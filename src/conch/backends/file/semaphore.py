"""``file://`` semaphores: a permit holds one of the name's ``limit`` slot files, taken under
the name's state file (docs/file.md)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from collections.abc import Callable, Iterator
from types import TracebackType

from conch.backends.base import Deadline, LossCallback
from conch.backends.file.lock import LockFile, retries
from conch.backends.file.session import FileSession, open_creating, tried
from conch.backends.kit.naming import readable_key
from conch.errors import LimitMismatch
from conch.introspection import HolderStamp

SEMAPHORES = ".conch-semaphores"  # in the lock directory
STATE = struct.Struct("<QI")  # a state file: the last token, the holders' limit


def slot_key(key: bytes, index: int) -> bytes:
    return key + b"\0slot %d" % index


class Permits:
    """One permit object's files, opened by each :meth:`attempt`."""

    def __init__(self, session: FileSession, key: bytes, limit: int, member_id: str,
                 on_lost: LossCallback) -> None:
        self.session, self.key, self.limit = session, key, limit
        self.state_path = os.path.join(session.directory, readable_key(key, 40) + ".state")
        self.slots = [LockFile(session, slot_key(key, index), member_id, on_lost,
                               draw_token=self._next_token) for index in range(limit)]
        self.path = self.slots[0].path
        self.held: LockFile | None = None
        self.token: int | None = None
        self._state = -1

    def watch(self, told: Callable[[int], object] | None) -> None:
        for slot in self.slots:
            slot.watch(told)

    def attempt(self) -> Permits:
        self.held = self.token = None
        self._state = open_creating(self.state_path)
        try:
            for slot in self.slots:
                slot.attempt()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __enter__(self) -> Permits:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is not None:
            self.held = self.token = None
        os.close(self._state)
        for slot in self.slots:
            if slot is not self.held:
                slot.close()

    def release(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            held.release()

    def try_take(self) -> int | None:
        """One try at each slot: the token, or ``None`` (:class:`LimitMismatch`: holders use
        another limit)."""
        fcntl.flock(self._state, fcntl.LOCK_EX)  # held for microseconds by each try
        try:
            self._check_limit()
            for slot in self.slots:
                if (token := slot.try_take()) is not None:
                    self.held, self.token = slot, token
                    return token
            return None
        finally:
            fcntl.flock(self._state, fcntl.LOCK_UN)

    def waits(self, deadline: Deadline) -> Iterator[float | None]:
        return retries(self, deadline)

    def _check_limit(self) -> None:
        stored = os.pread(self._state, STATE.size, 0)
        if len(stored) < STATE.size or (used := STATE.unpack(stored)[1]) == self.limit:
            return
        if any(self._slot_held(index) for index in range(used)):
            raise LimitMismatch(f"semaphore {self.key!r} is in use with limit {used}, "
                                f"not {self.limit}")
        os.pwrite(self._state, STATE.pack(STATE.unpack(stored)[0], self.limit), 0)

    def _slot_held(self, index: int) -> bool:
        path = self.session.lock_path(slot_key(self.key, index))
        with contextlib.suppress(FileNotFoundError), tried(path, fcntl.LOCK_EX) as (_, free):
            return not free
        return False  # swept, or never used: free

    def _next_token(self, slot_fd: int, stamp: HolderStamp) -> int:
        stored = os.pread(self._state, STATE.size, 0)
        token = self.session.token_after(
            STATE.unpack(stored)[0] if len(stored) == STATE.size else None)
        os.pwrite(self._state, STATE.pack(token, self.limit), 0)
        return self.session.record_hold(slot_fd, token, stamp)
