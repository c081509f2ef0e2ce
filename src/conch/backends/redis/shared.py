"""The ``redis://`` handles of shared holds and semaphore permits (one algorithm, two kinds
of entry), and the exclusive handle that waits as a writer while the lock is shared."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, NamedTuple

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.kit.ttl import new_hold_value
from conch.backends.redis import share_scripts as scripts
from conch.backends.redis.lock import RedisLock
from conch.backends.redis.session import EntryHold, RedisSession
from conch.backends.redis.share_scripts import Entry, PermitKeys, SharedKeys
from conch.backends.redis.steps import ScriptCall, busy_seconds, wait_seconds
from conch.errors import LimitMismatch, LockLost
from conch.introspection import HolderStamp

log = logging.getLogger("conch")
FIRST_TURN = 0.1
"""Seconds an exclusive acquire waits before it waits as a writer if the lock is shared."""


class EntryKind(NamedTuple):
    """A shared hold or a permit: its scripts, their keys and extra arguments (a limit)."""

    acquire: str
    keys: list[bytes]
    release: str
    entries: bytes
    guard: bytes
    wake: bytes
    limit: tuple[int, ...] = ()
    name: bytes = b""


def shared_kind(keys: SharedKeys) -> EntryKind:
    """The lock's shared holds: entries of its readers, guarded by its holder key."""
    lock = keys.lock
    return EntryKind(scripts.SHARED_ACQUIRE, [lock.holder, lock.counter, keys.readers,
                                              keys.writers, lock.wake, keys.readers_wake],
                     scripts.SHARED_RELEASE, keys.readers, lock.holder, lock.wake)


def permit_kind(keys: PermitKeys, limit: int, name: bytes) -> EntryKind:
    """The permits of semaphore ``name``: at most ``limit`` entries."""
    return EntryKind(scripts.PERMIT_ACQUIRE, list(keys), scripts.PERMIT_RELEASE, keys.permits,
                     keys.limit, keys.wake, (limit,), name)


class EntryLock(LockHandle):
    """One lock object's shared hold or permit: try; while busy, ``BLPOP`` on the wake list
    the answer names, then try again in the same round-trip."""

    def __init__(self, session: RedisSession, kind: EntryKind, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._session, self._kind, self._stamp, self._on_lost = session, kind, stamp, on_lost
        self._hold: EntryHold | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        ttl, kind = self._session.options.ttl, self._kind
        value, sent = new_hold_value(self._stamp), time.monotonic()
        granted, number, detail = self._attempt(value, 0, 0.0)
        while not granted:
            if (seconds := wait_seconds(busy_seconds(number, ttl), deadline, ttl)) is None:
                return None
            value, sent = new_hold_value(self._stamp), time.monotonic()
            granted, number, detail = self._attempt(value, int(detail), seconds)
        self._hold = self._session.entries.keep(Entry(kind.entries, kind.guard, detail), value,
                                                sent, self._on_lost)
        return int(number)

    def _attempt(self, value: bytes, waited: int, seconds: float) -> list[Any]:
        """Try with ``value`` after waiting on ``keys[waited - 1]`` (0: at once): ``[1, token,
        guard value]`` or ``[0, ms, KEYS index to wait on]``. Whatever fails, nothing is held."""
        session, kind = self._session, self._kind
        call: ScriptCall = (kind.acquire, kind.keys,
                            [value, session.options.ttl_ms, waited, *kind.limit])
        try:
            reply = session.wait_and_run(kind.keys[waited - 1], seconds, call) if waited \
                else session.run(call)
        except BaseException:
            # A shared hold that began the lock's shared period holds it with its value.
            session.abandon(self._release_call(value, value))
            raise
        if int(reply[0]) < 0:
            raise LimitMismatch(f"semaphore {kind.name!r} is in use with limit {reply[1]}, "
                                f"not {kind.limit[0]}")
        return [int(reply[0]), int(reply[1]), reply[2]]

    def _release_call(self, value: bytes, guard: bytes) -> ScriptCall:
        kind = self._kind
        return kind.release, [kind.entries, kind.guard, kind.wake], [value, guard]

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        self._session.entries.discard(hold)
        call = self._release_call(hold.value, hold.keys.guard_value)
        if self._session.closed:  # granted as the coordinator stopped: free it all the same
            self._session.abandon(call)
            return
        if not self._session.run(call):
            raise LockLost(f"{hold.keys.entries.decode()} lost this hold before its release "
                           "(TTL ran out, broken, or taken over): was the process paused "
                           "longer than the TTL?")


class WriterFirstLock(RedisLock):
    """The exclusive handle of a lock; while the lock is shared it waits as a writer, which
    new shared holds wait behind."""

    def __init__(self, session: RedisSession, keys: SharedKeys, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        super().__init__(session, keys.lock, stamp, on_lost)
        self._shared = keys

    def acquire(self, deadline: Deadline) -> int | None:
        token = super().acquire(turn_of(deadline, FIRST_TURN))
        session, waiting = self._session, None
        try:
            while token is None and not deadline.expired():
                if waiting is None:
                    call, member, sent = writer_waits(session, self._shared)
                    waiting = keep_waiting(session, self._shared, member, sent, session.run(call))
                token = super().acquire(turn_of(deadline, session.options.ttl))
        finally:
            if (done := stop_waiting(session, self._shared, waiting)) is not None:
                session.abandon(done)
        return token


def writer_waits(session: RedisSession, keys: SharedKeys) -> tuple[ScriptCall, bytes, float]:
    """WRITER_WAITS of a new member (which waits as a writer if the lock is shared), the
    member and when the call was made."""
    member = secrets.token_hex(16).encode()
    return (scripts.WRITER_WAITS, (keys.readers, keys.writers), (member, session.options.ttl_ms)
            ), member, time.monotonic()


def keep_waiting(session: RedisSession, keys: SharedKeys, member: bytes, sent: float,
                 entered: bool) -> EntryHold | None:
    """Renew writer ``member``'s entry until discarded, if it ``entered``."""
    if not entered:
        return None
    return session.entries.keep(Entry(keys.writers, keys.writers, b""), member, sent,
                                waiting_entry_lost)


def stop_waiting(session: RedisSession, keys: SharedKeys,
                 waiting: EntryHold | None) -> ScriptCall | None:
    """Stop renewing writer entry ``waiting``; the WRITER_DONE to send, if any."""
    if waiting is None:
        return None
    session.entries.discard(waiting)
    return None if session.closed else (scripts.WRITER_DONE, (keys.writers, keys.readers_wake),
                                        (waiting.value,))


def turn_of(deadline: Deadline, longest: float) -> Deadline:
    """The part of ``deadline`` that ends within ``longest`` seconds."""
    remaining = deadline.remaining()
    return Deadline(longest if remaining is None else min(longest, remaining))


def waiting_entry_lost(reason: str) -> None:
    log.debug("a waiting writer's entry was lost (%s): it waits on, unannounced", reason)
