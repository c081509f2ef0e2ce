"""What the sync and asyncio handles share: each acquire keeps a session of its own while it
holds (advisory locks are re-entrant within a session), and what each outcome of an acquire,
a release or a heartbeat check means for that session and its hold."""

from __future__ import annotations

import threading
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from conch import metrics
from conch.backends.base import LossCallback
from conch.backends.kit.session import Holds
from conch.backends.postgresql.session import Connection, Pool
from conch.errors import BackendUnavailable, ConchError, LockLost, NotStarted

S = TypeVar("S", bound=Connection)
_NAMED_KEYS_KEPT = 100_000


class Owner(Protocol):
    """The backend, as the handles see it."""

    named_keys: set[int]
    """Keys whose name this process recorded in the names table: not sent again."""

    def describe(self, problem: object) -> str:
        """``problem`` prefixed with the redacted URL, secrets removed."""


class Hold(Generic[S]):
    """One acquisition: the key, the session holding it, and whether it still does."""

    __slots__ = ("active", "checking", "guard", "key", "loop", "pool", "session")

    def __init__(self, key: int, session: S, pool: Pool[S], loop: Any = None) -> None:
        self.key = key
        self.session = session
        self.pool = pool
        self.loop = loop  # an async hold's event loop
        self.active = True  # not released, lost or abandoned
        self.guard = threading.Lock()  # a release and a check take turns
        self.checking: Any = None  # an async hold's check in progress


class HandleCore(Generic[S]):
    """The lock name, its key and its hold, and what each outcome means."""

    def __init__(self, owner: Owner, holds: Holds[Hold[S]], key: int, name: bytes,
                 on_lost: LossCallback) -> None:
        self._owner = owner
        self._holds = holds
        self._key = key
        self._name = name
        self._on_lost = on_lost
        self._hold: Hold[S] | None = None

    def name_to_record(self) -> bytes | None:
        """The name, with this process's first hold of the key (else ``None``)."""
        return None if self._key in self._owner.named_keys else self._name

    def failed(self, pool: Pool[S], session: S, exc: BaseException, retry: bool) -> None:
        """An acquire on ``session`` raised ``exc``: close it (it may hold the lock now);
        return to try once more (its connection was gone: a server restart), else raise."""
        broken = session.closed
        pool.discard(session)
        if not isinstance(exc, psycopg.Error):
            raise exc
        if pool.closed:  # its wait was cancelled, or its session closed, by stop()
            raise self.stopped() from None
        if not (retry and broken):
            raise BackendUnavailable(self._owner.describe(exc)) from None

    def taken(self, pool: Pool[S], session: S, token: int | None, loop: Any = None) -> int | None:
        """The acquire's answer on ``session``: the hold's token, or ``None`` (not taken)."""
        if token is None:
            pool.give_back(session)
            return None
        if self._key not in self._owner.named_keys:
            if len(self._owner.named_keys) >= _NAMED_KEYS_KEPT:
                self._owner.named_keys.clear()  # a name recorded twice costs a skipped insert
            self._owner.named_keys.add(self._key)
        hold = self._hold = Hold(self._key, session, pool, loop)
        self._holds.add(hold, self._on_lost)
        if pool.closed:  # stopped while we waited
            self._holds.discard(hold)
            self._hold = None
            pool.discard(session)
            raise self.stopped()
        return token

    def releasing(self) -> Hold[S] | None:
        """The hold to release (``None``: none); raises LockLost when it was lost."""
        hold, self._hold = self._hold, None
        if hold is None:
            return None
        self._holds.discard(hold)
        with hold.guard:
            active, hold.active = hold.active, False
        if not active:  # its session was closed; the report may be on its way
            raise lost_at_release(self._owner.describe, None)
        return hold

    def released(self, pool: Pool[S], session: S, unlocked: object) -> None:
        """The unlock's answer (True, False or an exception): give the session back."""
        if unlocked is True:
            pool.give_back(session)
            return
        pool.discard(session)
        if isinstance(unlocked, BaseException) and not isinstance(unlocked, psycopg.Error):
            raise unlocked
        raise lost_at_release(self._owner.describe, unlocked) from None

    def stopped(self) -> NotStarted:
        return stopped(self._owner)


def stopped(owner: Owner) -> NotStarted:
    """The error of an acquire after (or during) the coordinator's stop."""
    return NotStarted(owner.describe("the coordinator was stopped"))


def checked(holds: Holds[Hold[S]], hold: Hold[S], listed: object) -> None:
    """A heartbeat check's answer (True, False or an exception): report the hold lost when
    the server no longer lists it or its connection failed; a refused check says nothing."""
    if listed is True:
        reason = None
    elif listed is False:
        reason = "the server no longer lists it as held by this session"
    elif isinstance(listed, psycopg.OperationalError) or hold.session.closed:
        reason = f"its connection failed: {listed}"
    else:
        return  # no verdict; the next beat asks again
    if reason is None:
        metrics.record_renewals("postgresql", 1)
        return
    with hold.guard:
        active, hold.active = hold.active, False
    if active:
        hold.pool.discard(hold.session)
        holds.lose(hold, reason)
        metrics.record_renewals("postgresql", 0, 1)


def lost_at_release(describe: Any, exc: object) -> LockLost:
    """The hold turned out gone at release: its session failed (``exc``), or the server did
    not list the lock as held (``None``, ``False``)."""
    if not isinstance(exc, BaseException):
        return LockLost(describe("the server no longer held the lock for this session"))
    return LockLost(describe(
        f"the session holding the lock failed before release ({exc}); "
        "the server freed the lock, another holder may have taken it"))


def cannot_connect(owner: Owner, exc: Exception) -> ConchError:
    """A session that could not be opened, as a conch error."""
    return BackendUnavailable(owner.describe(f"cannot connect: {exc}"))
