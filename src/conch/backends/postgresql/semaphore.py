"""``postgresql://`` semaphores: a permit is one of ``limit`` two-int advisory locks, the
limit a shared marker lock; a release notifies the waiters. docs/postgresql.md"""

from __future__ import annotations

import psycopg

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.postgresql.lock import HandleCore, Hold, Sessions
from conch.backends.postgresql.session import Session
from conch.backends.postgresql.statements import FENCING_SEQUENCE, THIS_DATABASE, Statement, Steps
from conch.errors import LimitMismatch

CHANNEL = "conch_semaphores"
LIMITS = range(1, 2**31)
"""The limits a semaphore may have here (each is an offset in the 32-bit key space)."""
RECHECK = 1.0
"""Seconds a waiter waits for a NOTIFY before it tries again: a holder that dies frees its
permit without one."""

_WORDS = 2**32
# A semaphore's keys are (first, x): permit i at x = second + i, the marker of limit m at
# x = second - m, each modulo 2**32 as a signed int. $1 first, $2 second, $3 the limit.
_PERMIT = "((($2::bigint + i + 2147483648) % 4294967296) - 2147483648)::int"
# A free permit (its slot and a token), or NULL: slots are tried in order, the first taken.
_FREE_PERMIT = (f"(SELECT i || ' ' || nextval('{FENCING_SEQUENCE}')"
                " FROM generate_series(0, $3::int - 1) AS i"
                f" WHERE pg_try_advisory_lock($1::int, {_PERMIT}) LIMIT 1)")
_OFFSET = "((($2::bigint - objid::bigint) % 4294967296 + 4294967296) % 4294967296)"
# The limit of another marker of this semaphore granted to any session, or NULL.
_OTHER_LIMIT = (f"(SELECT {_OFFSET} FROM pg_locks WHERE locktype = 'advisory'"
                f" AND objsubid = 2 AND granted AND {THIS_DATABASE}"
                " AND classid = ($1::bigint & 4294967295)::oid"
                " AND objid <> ($4::bigint & 4294967295)::oid"
                f" AND {_OFFSET} BETWEEN 1 AND 2147483647 LIMIT 1)")
# The marker ($4) first, then the check (pg_locks is live: of two acquirers with different
# limits, at least the later sees the other's marker), then a permit: CASE and coalesce()
# evaluate in order, and only as far as needed.
_ENTER = ("SELECT CASE WHEN NOT pg_try_advisory_lock_shared($1::int, $4::int) THEN NULL"
          f" ELSE coalesce('-' || {_OTHER_LIMIT}, {_FREE_PERMIT}) END")
_RETRY = f"SELECT {_FREE_PERMIT}"
_LEAVE = "SELECT pg_advisory_unlock_shared($1::int, $2::int)"
# Both unlocks (2 when both were held), then the NOTIFY, sent when the statement commits.
_RELEASE = ("SELECT pg_advisory_unlock($1::int, $2::int)::int"
            f" + pg_advisory_unlock_shared($1::int, $3::int)::int FROM pg_notify('{CHANNEL}', $4)")
_LISTEN = {True: f"LISTEN {CHANNEL}", False: f"UNLISTEN {CHANNEL}"}


def _int4(value: int) -> int:
    """``value`` modulo 2**32 as a signed 32-bit int."""
    return (value + 2**31) % _WORDS - 2**31


def _permit(answer: bytes | None) -> tuple[int, bytes] | None:
    if answer is None:
        return None
    slot, token = answer.split()
    return int(slot), token


def listen(on: bool) -> Steps[None]:
    """Start (or stop) hearing the releases of every semaphore on this session."""
    yield Statement(_LISTEN[on], ())


class SemaphorePermit(HandleCore[Session], LockHandle):
    """The blocking handle of one permit of a semaphore."""

    _sessions: Sessions

    def __init__(self, sessions: Sessions, key: int, name: bytes, limit: int,
                 on_lost: LossCallback) -> None:
        super().__init__(sessions, key, name, on_lost)
        self._first, self._second, self._limit = key >> 32, _int4(key), limit
        # The statements' parameters: first, second, the limit, the marker's second key.
        self._params = tuple(b"%d" % n for n in (
            self._first, self._second, limit, _int4(self._second - limit)))
        self._wake_word = b"%d %d" % (self._first, self._second)  # the NOTIFY's payload
        self._slot = 0

    def acquire(self, deadline: Deadline) -> int | None:
        for retry in (True, False):
            session = self._sessions.borrow()
            if not self.failed(session, taken := self._wait(session, deadline), retry):
                break
        if not isinstance(taken, tuple):  # None: not taken
            return self.taken(session, None)
        self._slot, token = taken
        return self.taken(session, token)

    def release(self) -> None:
        if (hold := self.releasing()) is not None:
            self.released(hold, hold.session.outcome(self._release()))

    def new_hold(self, session: Session, loop: object) -> Hold[Session]:
        """The permit's keys packed as one bigint, for ``statements.holds`` (space 2)."""
        packed = (self._first % _WORDS) << 32 | (self._second + self._slot) % _WORDS
        return Hold(packed - 2**64 if packed >= 2**63 else packed, session, self._pool, loop,
                    space=2)

    def _enter(self) -> Steps[tuple[int, bytes] | None]:
        """Hold the marker and try for a permit: ``(slot, token)``, or ``None`` (marker kept);
        LimitMismatch (marker given back) while another limit is in use."""
        answer = yield Statement(_ENTER, self._params)
        if answer is not None and answer.startswith(b"-"):
            yield from self._leave()
            raise LimitMismatch(f"the semaphore is in use with limit {int(answer[1:])}, "
                                f"not {self._limit}")
        return _permit(answer)

    def _retry(self) -> Steps[tuple[int, bytes] | None]:
        """Try again for a permit (the marker held)."""
        return _permit((yield Statement(_RETRY, self._params[:3])))

    def _leave(self) -> Steps[None]:
        """Give the marker back (no permit taken)."""
        yield Statement(_LEAVE, (self._params[0], self._params[3]))

    def _release(self) -> Steps[bool]:
        """Give the permit and the marker back, waking the waiters: False when this session
        no longer held them."""
        params = (self._params[0], b"%d" % _int4(self._second + self._slot), self._params[3],
                  self._wake_word)
        return (yield Statement(_RELEASE, params)) == b"2"

    def _wait(self, session: Session, deadline: Deadline) -> object:
        """A permit taken on ``session`` before ``deadline``, ``None``, or what failed."""
        taken = session.outcome(self._enter())
        listening = False
        while taken is None and (remaining := deadline.remaining()) != 0:
            if listening:  # tried since LISTEN: a release from now on is heard
                woken = self._woken(session, RECHECK if remaining is None else
                                    min(remaining, RECHECK))
            else:
                woken, listening = session.outcome(listen(True)), True
            if woken is not None:
                return woken
            taken = session.outcome(self._retry())
        if isinstance(taken, BaseException):
            return taken
        if taken is None and (left := session.outcome(self._leave())) is not None:
            return left
        if listening and (heard := session.outcome(listen(False))) is not None:
            return heard
        return taken

    def _woken(self, session: Session, timeout: float) -> object:
        """Wait up to ``timeout`` for a release of this semaphore (or another's); the error
        of a failed wait."""
        try:
            for heard in session.notifies(timeout=timeout):
                if heard.payload.encode() == self._wake_word:
                    break
        except psycopg.Error as exc:
            return exc
        return None
