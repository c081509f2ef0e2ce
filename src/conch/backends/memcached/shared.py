"""``memcached://`` shared locks and semaphores: one key listing the members, each alive
while a key of its own lives (docs/memcached.md, "Shared locks and semaphores")."""

from __future__ import annotations

import json
import logging
import math
import time

from conch.backends.base import Deadline, LossCallback
from conch.backends.kit.ttl import TtlHold
from conch.backends.memcached.client import (
    CLIENT_ERRORS,
    LockKeys,
    MemcachedClient,
    MemcachedSession,
    Sharing,
    member_key,
)
from conch.backends.memcached.lock import Attempt, MemcachedLock
from conch.errors import BackendUnavailable, LimitMismatch, LockLost

log = logging.getLogger("conch")
READ_EVERY = 0.05  # seconds between a waiting writer's reads of the holder key


class MemberHold(MemcachedLock):
    """A hold listed in the name's key (the listing), alive while ``<listing>:<id>`` lives."""

    def __init__(self, session: MemcachedSession, name: bytes, member_id: str,
                 on_lost: LossCallback, kind: bytes = b"") -> None:
        super().__init__(session, name, member_id, on_lost, kind)
        self._listing = self._keys.holder
        self._keys = LockKeys(member_key(self._listing, self._id), self._keys.counter)


class MemcachedReader(MemberHold):
    """A shared hold, listed in the lock's holder key."""

    _listed: TtlHold[bytes] | None = None

    def _take(self, client: MemcachedClient, value: bytes, retried: bool) -> Attempt:
        holder, ttl = self._listing, self._session.options.ttl
        while True:  # until the key is unchanged between its read and this change
            found, cas = client.gets(holder)
            sharing = Sharing.read(found)
            if found is not None and sharing is None:
                return None, None, 0.0  # held exclusively
            alive = Sharing([], []) if sharing is None else sharing.alive(client, holder)
            if alive.writers:
                return None, None, 0.0  # writer preference: wait behind them
            client.set(self._keys.holder, value, expire=ttl)  # alive before it is listed
            joined = Sharing([*alive.readers, self._id], alive.writers).encode()
            if client.store(holder, joined, None if found is None else cas, ttl):
                break
        attempt = self._fenced(client, value)
        if attempt[0] is None:  # restart grace: hold nothing until it ends
            self._leave(client)
        else:
            self._listed = self._session.ttl.keep(holder, self._id.encode(), time.monotonic(),
                                                  self._on_lost)
        return attempt

    def release(self) -> None:
        listed, self._listed = self._listed, None
        if listed is not None:
            self._session.ttl.discard(listed)
        with self._session.translated():
            was_listed = self._session.run(lambda client, _: self._leave(client))
        super().release()  # its own key; the lock's waiters in this process wake
        if not was_listed:
            raise LockLost(f"lock key {self._listing.decode()} no longer listed this shared "
                           "hold at its release (expired, broken or taken over)")

    def _leave(self, client: MemcachedClient) -> bool:
        """Unlist this reader (the last live one deletes the key); whether it was listed."""
        holder, ttl = self._listing, self._session.options.ttl
        while True:  # a failed change means another changed the key: read it again
            value, cas = client.gets(holder)
            sharing = Sharing.read(value)
            if sharing is None or self._id not in sharing.readers:
                return False
            alive = Sharing([r for r in sharing.readers if r != self._id],
                            sharing.writers).alive(client, holder)
            if alive.readers:
                stored = client.cas(holder, alive.encode(), cas, expire=ttl)
            else:  # the waiting writers add the key as their exclusive hold
                stored = client.compare_and_delete(holder, cas) == b"HD"
            if stored:
                return True


class MemcachedWriter(MemcachedLock):
    """An exclusive hold: takes over a sharing with no live holder, else waits listed."""

    _waiting: TtlHold[bytes] | None = None  # its key as a waiting writer, while it has one
    _read_at = -math.inf

    def acquire(self, deadline: Deadline) -> int | None:
        self._read_at = -math.inf
        try:
            return super().acquire(deadline)
        finally:
            waiting, self._waiting = self._waiting, None
            if waiting is not None:  # its key gone, it no longer holds readers back
                self._session.ttl.discard(waiting)
                try:
                    self._session.run(lambda client, _: client.free(waiting.keys, waiting.value))
                except CLIENT_ERRORS:
                    log.warning("could not delete waiting writer key %s; it expires within "
                                "the TTL", waiting.keys.decode())

    def _take(self, client: MemcachedClient, value: bytes, retried: bool) -> Attempt:
        attempt = super()._take(client, value, retried)
        if attempt[0] is not None or attempt[2] or time.monotonic() < self._read_at + READ_EVERY:
            return attempt
        holder, ttl = self._keys.holder, self._session.options.ttl
        self._read_at = time.monotonic()
        found, cas = client.gets(holder)
        sharing = Sharing.read(found)
        if sharing is None:
            return attempt  # held exclusively, or just freed: the next attempt adds
        alive = sharing.alive(client, holder)
        if not alive.readers:  # nobody alive shares it: take it over, if unchanged since
            return self._fenced(client, value) if client.cas(holder, value, cas, expire=ttl) \
                else attempt
        if self._id not in alive.writers:  # wait listed, so that new readers wait
            if self._waiting is None:
                key = member_key(holder, self._id)
                client.set(key, b"waiting", expire=ttl)
                self._waiting = self._session.ttl.keep(key, b"waiting", time.monotonic(),
                    lambda why: log.debug("a waiting writer's key was lost (%s)", why))
            waiting = Sharing(alive.readers, [*alive.writers, self._id]).encode()
            client.cas(holder, waiting, cas, expire=ttl)  # else listed at the next attempt
        return attempt


class MemcachedPermit(MemberHold):
    """A semaphore's permit, listed in the roster (the limit and the holders' ids)."""

    def __init__(self, session: MemcachedSession, name: bytes, member_id: str, limit: int,
                 on_lost: LossCallback) -> None:
        super().__init__(session, name, member_id, on_lost, b"semaphore:")
        self._limit, self._name = limit, name

    def _take(self, client: MemcachedClient, value: bytes, retried: bool) -> Attempt:
        while True:  # until the roster is unchanged between its read and this change
            text, cas = client.gets(self._listing)
            try:
                roster = {"limit": None, "holders": []} if text is None else json.loads(text)
                limit, listed = roster["limit"], [str(holder) for holder in roster["holders"]]
            except (ValueError, KeyError, TypeError):
                raise BackendUnavailable(f"the roster key of semaphore {self._name!r} holds "
                                         "something conch did not write") from None
            alive = client.alive_members(self._listing, listed)
            if alive and limit != self._limit:
                raise LimitMismatch(f"semaphore {self._name!r} is in use with limit {limit}, "
                                    f"not {self._limit}")
            if self._id not in alive and len(alive) >= self._limit:
                return None, None, 0.0
            client.set(self._keys.holder, value, expire=self._session.options.ttl)
            roster = json.dumps({"limit": self._limit,
                                 "holders": sorted({*alive, self._id})}).encode()
            if client.store(self._listing, roster, None if text is None else cas, 0):
                return self._fenced(client, value)
            client.free(self._keys.holder, value)
