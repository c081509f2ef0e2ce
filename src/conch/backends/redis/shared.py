"""The ``redis://`` handles of shared holds and semaphore permits: one algorithm (try; while
busy, ``BLPOP`` on the wake list the answer names and try again in the same round-trip),
two kinds of entry. And the exclusive handle that, while the lock has shared holders,
waits as a writer so that new shared holds queue behind it (writer preference)."""

from __future__ import annotations

import abc
import logging
import secrets
import time
from typing import Any, NamedTuple

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.kit.ttl import new_hold_value
from conch.backends.redis import share_scripts as scripts
from conch.backends.redis.session import EntryHold, RedisSession
from conch.backends.redis.share_scripts import Entry, PermitKeys, SharedKeys
from conch.backends.redis.steps import ScriptCall, busy_seconds, wait_seconds
from conch.errors import LimitMismatch, LockLost
from conch.introspection import HolderStamp

log = logging.getLogger("conch")
FIRST_TURN = 0.1
"""Seconds an exclusive acquire waits as before, then as a writer if the lock is shared:
how long new shared holds may still overtake it."""


class Attempt(NamedTuple):
    """An acquire script's answer: the token, or the seconds to wait at most and the list
    to wait on; ``guard``: the holder value a shared hold joined."""

    token: int | None
    busy_for: float = 0.0
    wake: bytes = b""
    guard: bytes = b""


class Kind(abc.ABC):
    """What differs between a shared hold and a permit: their scripts and keys."""

    @abc.abstractmethod
    def acquire_call(self, value: bytes, waited_on: bytes) -> ScriptCall:
        """The attempt with ``value`` after a wait on list ``waited_on`` (empty: none)."""

    @abc.abstractmethod
    def outcome(self, reply: list[Any], ttl: float) -> Attempt:
        """What the attempt's reply means."""

    @abc.abstractmethod
    def entry(self, guard: bytes) -> Entry:
        """What the renewals check of a hold that joined ``guard``."""

    @abc.abstractmethod
    def release_call(self, value: bytes, guard: bytes) -> ScriptCall:
        """The release of the hold ``value`` that joined ``guard``."""


class Shared(Kind):
    """A shared hold of a lock: an entry of the lock's readers."""

    def __init__(self, keys: SharedKeys, ttl_ms: int) -> None:
        self.keys, self.ttl_ms = keys, ttl_ms
        lock = keys.lock
        self._keys = [lock.holder, lock.counter, keys.readers, keys.writers, lock.wake,
                      keys.readers_wake]

    def acquire_call(self, value: bytes, waited_on: bytes) -> ScriptCall:
        waited = self._keys.index(waited_on) + 1 if waited_on else 0
        return scripts.SHARED_ACQUIRE, self._keys, [value, self.ttl_ms, waited]

    def outcome(self, reply: list[Any], ttl: float) -> Attempt:
        if int(reply[0]):
            return Attempt(int(reply[1]), guard=reply[2])
        return Attempt(None, busy_seconds(int(reply[1]), ttl), self._keys[int(reply[2]) - 1])

    def entry(self, guard: bytes) -> Entry:
        return Entry(self.keys.readers, self.keys.lock.holder, guard)

    def release_call(self, value: bytes, guard: bytes) -> ScriptCall:
        lock = self.keys.lock
        return scripts.SHARED_RELEASE, [lock.holder, self.keys.readers, lock.wake], [value, guard]


class Permit(Kind):
    """A permit of a semaphore: an entry of its permits, at most ``limit`` of them."""

    def __init__(self, keys: PermitKeys, ttl_ms: int, limit: int, name: bytes) -> None:
        self.keys, self.ttl_ms, self.limit, self.name = keys, ttl_ms, limit, name
        self._keys = [keys.permits, keys.counter, keys.limit, keys.wake]

    def acquire_call(self, value: bytes, waited_on: bytes) -> ScriptCall:
        return (scripts.PERMIT_ACQUIRE, self._keys,
                [value, self.ttl_ms, self.limit, int(bool(waited_on))])

    def outcome(self, reply: list[Any], ttl: float) -> Attempt:
        granted, number = int(reply[0]), int(reply[1])
        if granted < 0:
            raise LimitMismatch(f"semaphore {self.name!r} is in use with limit {number}, "
                                f"not {self.limit}")
        if granted:
            return Attempt(number)
        return Attempt(None, busy_seconds(number, ttl), self.keys.wake)

    def entry(self, guard: bytes) -> Entry:
        return Entry(self.keys.permits, self.keys.limit, b"")

    def release_call(self, value: bytes, guard: bytes) -> ScriptCall:
        keys = self.keys
        return scripts.PERMIT_RELEASE, [keys.permits, keys.limit, keys.wake], [value]


class EntryLock(LockHandle):
    """One lock object's shared hold or permit."""

    def __init__(self, session: RedisSession, kind: Kind, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._session, self._kind, self._stamp, self._on_lost = session, kind, stamp, on_lost
        self._hold: EntryHold | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        ttl = self._session.options.ttl
        value, sent = new_hold_value(self._stamp), time.monotonic()
        attempt = self._attempt(value, b"", 0.0)
        while attempt.token is None:
            seconds = wait_seconds(attempt.busy_for, deadline, ttl)
            if seconds is None:
                return None
            value, sent = new_hold_value(self._stamp), time.monotonic()
            attempt = self._attempt(value, attempt.wake, seconds)
        self._hold = self._session.entries.keep(self._kind.entry(attempt.guard), value, sent,
                                                self._on_lost)
        return attempt.token

    def _attempt(self, value: bytes, wake: bytes, seconds: float) -> Attempt:
        """Try with ``value``, after waiting on ``wake`` (empty: at once). Whatever fails,
        nothing is left held."""
        session, call = self._session, self._kind.acquire_call(value, wake)
        try:
            reply = session.wait_and_run(wake, seconds, call) if wake else session.run(call)
            return self._kind.outcome(reply, session.options.ttl)
        except BaseException:
            # A shared hold that began the lock's shared period holds it with its value.
            session.abandon(self._kind.release_call(value, value))
            raise

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        self._session.entries.discard(hold)
        call = self._kind.release_call(hold.value, hold.keys.guard_value)
        if self._session.closed:  # granted as the coordinator stopped: free it all the same
            self._session.abandon(call)
            return
        if not self._session.run(call):
            raise LockLost(f"{hold.keys.entries.decode()} lost this hold before its release "
                           "(TTL ran out, broken, or taken over): was the process paused "
                           "longer than the TTL?")


class WriterFirstLock(LockHandle):
    """The exclusive handle of a lock; while the lock has shared holders, it waits as a
    writer: new shared holds wait until it is through (or gives up)."""

    def __init__(self, exclusive: LockHandle, session: RedisSession, keys: SharedKeys) -> None:
        self._exclusive, self._session, self._keys = exclusive, session, keys

    def acquire(self, deadline: Deadline) -> int | None:
        # First as before (an exclusive-only lock pays nothing more), for a short turn.
        token = self._exclusive.acquire(turn_of(deadline, FIRST_TURN))
        waiting: EntryHold | None = None
        try:
            # Then in turns of a TTL at most, to wait as a writer once shared holds appear.
            while token is None and not deadline.expired():
                waiting = waiting or self._wait_as_writer()
                token = self._exclusive.acquire(turn_of(deadline, self._session.options.ttl))
        finally:
            if waiting is not None:
                self._stop_waiting(waiting)
        return token

    def release(self) -> None:
        self._exclusive.release()

    def _wait_as_writer(self) -> EntryHold | None:
        """Enter the waiting writers if the lock has shared holders."""
        member, sent = secrets.token_hex(16).encode(), time.monotonic()
        if not self._session.run(writer_waits(self._keys, member, self._session.options.ttl_ms)):
            return None
        return keep_waiting(self._session, self._keys, member, sent)

    def _stop_waiting(self, waiting: EntryHold) -> None:
        self._session.entries.discard(waiting)
        if not self._session.closed:  # else the entry expires within the TTL
            self._session.abandon(writer_done(self._keys, waiting.value))


def writer_waits(keys: SharedKeys, member: bytes, ttl_ms: int) -> ScriptCall:
    """WRITER_WAITS: ``member`` waits as a writer if the lock has shared holders."""
    return scripts.WRITER_WAITS, (keys.readers, keys.writers), (member, ttl_ms)


def writer_done(keys: SharedKeys, member: bytes) -> ScriptCall:
    """WRITER_DONE: ``member`` waits as a writer no more."""
    return scripts.WRITER_DONE, (keys.writers, keys.readers_wake), (member,)


def keep_waiting(session: RedisSession, keys: SharedKeys, member: bytes,
                 sent: float) -> EntryHold:
    """Renew writer ``member``'s entry (sent at ``sent``) until discarded."""
    return session.entries.keep(Entry(keys.writers, keys.writers, b""), member, sent,
                                waiting_entry_lost)


def turn_of(deadline: Deadline, longest: float) -> Deadline:
    """The part of ``deadline`` that ends within ``longest`` seconds."""
    remaining = deadline.remaining()
    return Deadline(longest if remaining is None else min(longest, remaining))


def waiting_entry_lost(reason: str) -> None:
    log.debug("a waiting writer's entry was lost (%s): it waits on, unannounced", reason)
