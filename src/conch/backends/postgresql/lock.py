"""The ``postgresql://`` backend's blocking side: the lock handle, and the coordinator's
pool of sessions and the holds they keep (checked by the backend's heartbeat)."""

from __future__ import annotations

import math
from typing import Any

import psycopg

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.kit.session import Holds
from conch.backends.postgresql import statements
from conch.backends.postgresql.hold import (
    HandleCore,
    Hold,
    Owner,
    cannot_connect,
    checked,
    stopped,
)
from conch.backends.postgresql.session import Pool, Session, run
from conch.backends.postgresql.statements import Steps


class Sessions:
    """The coordinator's blocking sessions (a pool) and the holds they keep."""

    def __init__(self, owner: Owner, conninfo: str, io_timeout: float, keep_idle: int) -> None:
        self.owner = owner
        self._conninfo = conninfo
        self._io_timeout = io_timeout
        self.pool: Pool[Session] = Pool(keep_idle, lambda: stopped(owner))
        self.holds: Holds[Hold[Session]] = Holds()

    def open(self) -> Session:
        """A new session (raises BackendUnavailable)."""
        try:
            return Session.open(self._conninfo, self._io_timeout)
        except psycopg.Error as exc:
            raise cannot_connect(self.owner, exc) from None

    def borrow(self) -> Session:
        """An idle live session, or a new one; NotStarted once closed."""
        return self.pool.idle_one() or self.pool.lend(self.open())

    def check_holds(self) -> None:
        """Ask the server whether each hold lives (the heartbeat thread)."""
        for hold in self.holds.snapshot():
            with hold.guard:
                if not hold.active:
                    continue  # released meanwhile: its session may serve another hold now
                listed = answer(hold.session, statements.holds(hold.key))
            checked(self.holds, hold, listed)

    def close(self) -> None:
        """Cancel the lock waits in progress, then close every session once idle."""
        lent = self.pool.close()
        for _ in range(max(1, math.ceil(self._io_timeout / 0.5))):
            for session in lent:
                if session.waiting_for_lock:  # a cancel sent before the wait began is lost
                    session.cancel_safe(timeout=self._io_timeout)
            lent = [session for session in lent if not session.close_when_idle(0.5)]
            if not lent:
                break
        self.holds.lose_all("the coordinator was stopped")


class AdvisoryLock(HandleCore[Session], LockHandle):
    """The blocking handle of one lock name."""

    def __init__(self, sessions: Sessions, key: int, name: bytes, on_lost: LossCallback) -> None:
        super().__init__(sessions.owner, sessions.holds, key, name, on_lost)
        self._sessions = sessions

    def acquire(self, deadline: Deadline) -> int | None:
        retry = True
        while True:
            session = self._sessions.borrow()
            try:
                token = run(session, statements.take(session, self._key, deadline,
                                                     self.name_to_record()))
            except BaseException as exc:
                self.failed(self._sessions.pool, session, exc, retry)
                retry = False
                continue
            return self.taken(self._sessions.pool, session, token)

    def release(self) -> None:
        hold = self.releasing()
        if hold is not None:
            unlocked = answer(hold.session, statements.unlock(self._key))
            self.released(self._sessions.pool, hold.session, unlocked)


def answer(session: Session, steps: Steps[Any]) -> object:
    """What ``steps`` return, or what they raised."""
    try:
        return run(session, steps)
    except BaseException as exc:
        return exc
