"""The ``postgresql://`` backend's blocking lock handle, and the hold it keeps.

An acquire borrows a session of its own from the backend's pool and keeps it while it
holds (advisory locks are re-entrant within a session); release unlocks and gives it
back, or closes it when the unlock did not succeed. The backend's heartbeat asks each
:class:`Hold` whether the server still lists it (:meth:`Hold.verify`). What a hold
means is told in :mod:`conch.backends.postgresql.backend`; the asyncio handle is
:mod:`conch.backends.postgresql.async_lock`'s.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.postgresql.protocol import lost_at_release, refused
from conch.backends.postgresql.session import Session
from conch.backends.postgresql.wire import SessionBroken, StatementFailed
from conch.errors import NotStarted

if TYPE_CHECKING:
    from conch.backends.postgresql.backend import PostgreSQLBackend


class Hold:
    """One acquisition: the key, the session holding it, and whether it still does."""

    __slots__ = ("active", "guard", "key", "session")

    def __init__(self, key: int, session: Session) -> None:
        self.key = key
        self.session = session
        self.active = True
        self.guard = threading.Lock()  # release and the heartbeat's check take turns

    def verify(self) -> str | None:
        """Ask the server whether the hold lives; the reason it was lost, else ``None``."""
        with self.guard:
            if not self.active:
                return None  # released meanwhile: its session may serve another hold now
            try:
                if self.session.holds(self.key):
                    return None
                reason = "the server no longer lists it as held by this session"
            except SessionBroken as exc:
                reason = f"its connection failed: {exc}"
            except StatementFailed:
                return None  # no verdict; the next beat asks again
            self.active = False
            return reason


class AdvisoryLock(LockHandle):
    """The blocking handle of one lock name: each acquire borrows a session of its own."""

    def __init__(self, backend: PostgreSQLBackend, key: int, name: bytes,
                 on_lost: LossCallback) -> None:
        self._backend = backend
        self._key = key
        self._name = name
        self._on_lost = on_lost
        self._hold: Hold | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        try:
            return self._attempt(deadline)
        except SessionBroken:
            pass  # its session died (a pooled one, with a server restart): once more
        try:
            return self._attempt(deadline)
        except SessionBroken as exc:
            raise self._backend.unavailable(exc) from None

    def _attempt(self, deadline: Deadline) -> int | None:
        backend, pool = self._backend, self._backend.pool
        try:
            session = pool.borrow()
        except SessionBroken:
            raise NotStarted(backend.describe("the coordinator was stopped")) from None
        try:
            # Name the key in conch_lock_names with this process's first hold of it.
            name = None if self._key in backend.named_keys else self._name
            token = session.lock(self._key, deadline, name)
            if token is not None and name is not None:
                backend.name_recorded(self._key)
        except StatementFailed as exc:
            pool.discard(session)  # it may hold the lock now: closing the session frees it
            raise refused(backend.describe, exc, pool.closed) from None
        except BaseException:
            pool.discard(session)
            raise
        if token is None:
            pool.give_back(session)
            return None
        hold = self._hold = Hold(self._key, session)
        backend.holds.add(hold, self._on_lost)
        if pool.closed:  # stopped while we waited: the session was closed under us
            backend.holds.discard(hold)
            self._hold = None
            raise NotStarted(backend.describe("the coordinator was stopped"))
        return token

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        backend = self._backend
        backend.holds.discard(hold)
        with hold.guard:
            active, hold.active = hold.active, False
        if not active:  # the heartbeat closed its session; the report may be on its way
            raise lost_at_release(backend.describe, None)
        try:
            unlocked = hold.session.unlock(self._key)
        except (SessionBroken, StatementFailed) as exc:
            backend.pool.discard(hold.session)
            raise lost_at_release(backend.describe, exc) from None
        if not unlocked:
            backend.pool.discard(hold.session)
            raise lost_at_release(backend.describe, None)
        backend.pool.give_back(hold.session)
