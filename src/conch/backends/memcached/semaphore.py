"""``memcached://`` semaphores: per name a roster key (the limit and the ids of its holders,
changed only by ``add`` or ``cas``, so each change rests on the roster it read) and per
holder a permit key with the TTL, renewed with the locks. A listed holder counts while
its permit key lives. docs/memcached.md, "Semaphores"."""

from __future__ import annotations

import json
import secrets
from typing import NamedTuple

from pymemcache.client.base import Client  # type: ignore[import-untyped]

from conch.backends.base import LossCallback
from conch.backends.kit.naming import hex_digest
from conch.backends.memcached.client import KEY_PREFIX, LockKeys
from conch.backends.memcached.lock import Attempt, MemcachedLock, fenced, free
from conch.backends.memcached.session import MemcachedSession
from conch.errors import BackendUnavailable, LimitMismatch
from conch.introspection import HolderStamp

SEMAPHORE_PREFIX = KEY_PREFIX + b"semaphore:"


class SemaphoreKeys(NamedTuple):
    """The keys of one semaphore name; its permit keys are ``roster:<holder id>``."""

    roster: bytes
    counter: bytes


def semaphore_keys(name: bytes) -> SemaphoreKeys:
    """``conch:semaphore:<sha256 hex>`` and its ``:token`` counter, apart from the locks'
    (``conch:<hex>``)."""
    roster = SEMAPHORE_PREFIX + hex_digest(name).encode()
    return SemaphoreKeys(roster, roster + b":token")


class MemcachedPermit(MemcachedLock):
    """One semaphore object's permit: the lock's algorithm (waiting, tokens, renewal,
    release) on a permit key of its own, taken only while the roster has room."""

    def __init__(self, session: MemcachedSession, keys: SemaphoreKeys, limit: int,
                 name: bytes, stamp: HolderStamp, on_lost: LossCallback) -> None:
        self._holder_id = secrets.token_hex(16)
        super().__init__(session, LockKeys(self._permit_key(keys, self._holder_id),
                                           keys.counter), stamp, on_lost)
        self._roster, self._limit, self._name = keys.roster, limit, name
        # Every release of a permit of this name wakes this process's waiters.
        self._signal = f"{session.options.where} ".encode() + keys.roster

    @staticmethod
    def _permit_key(keys: SemaphoreKeys, holder_id: str) -> bytes:
        return keys.roster + b":" + holder_id.encode()

    def _take(self, client: Client, value: bytes, retried: bool) -> Attempt:
        # Each failed cas means another acquire changed the roster: read it again.
        while (listed := self._enter_roster(client, value)) is None:
            pass
        return fenced(client, self._keys, value, self._session.options) if listed \
            else (None, None, 0.0)

    def _enter_roster(self, client: Client, value: bytes) -> bool | None:
        """List this holder, its permit key set first: True; False when the permits are
        all taken; None when the roster changed since it was read."""
        keys = SemaphoreKeys(self._roster, self._keys.counter)
        text, cas = client.gets(self._roster)
        limit, listed = _read_roster(text, self._name)
        found = client.get_many([self._permit_key(keys, holder) for holder in listed])
        alive = [holder for holder in listed if self._permit_key(keys, holder) in found]
        if alive and limit != self._limit:
            raise LimitMismatch(f"semaphore {self._name!r} is in use with limit {limit}, "
                                f"not {self._limit}")
        if self._holder_id not in alive and len(alive) >= self._limit:
            return False
        client.set(self._keys.holder, value, expire=self._session.options.ttl)
        roster = json.dumps({"limit": self._limit,
                             "holders": sorted({*alive, self._holder_id})}).encode()
        if text is None:
            stored = client.add(self._roster, roster, expire=0)
        else:
            stored = client.cas(self._roster, roster, cas, expire=0)
        if not stored:
            free(client, self._keys.holder, value)
            return None
        return True


def _read_roster(text: bytes | None, name: bytes) -> tuple[int | None, list[str]]:
    """A roster's limit and holder ids (``None``, ``[]``: no roster)."""
    if text is None:
        return None, []
    try:
        roster = json.loads(text)
        return int(roster["limit"]), [str(holder) for holder in roster["holders"]]
    except (ValueError, KeyError, TypeError):
        raise BackendUnavailable(f"the roster key of semaphore {name!r} holds something "
                                 "conch did not write") from None
