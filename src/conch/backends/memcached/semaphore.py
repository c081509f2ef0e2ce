"""``memcached://`` semaphores: per name a roster key (the limit and its holders' ids,
changed by ``add`` or ``cas``) and per holder a permit key with the TTL, renewed with the
locks (docs/memcached.md, "Shared locks and semaphores")."""

from __future__ import annotations

import json
import secrets

from pymemcache.client.base import Client  # type: ignore[import-untyped]

from conch.backends.base import LossCallback
from conch.backends.kit.naming import hex_digest
from conch.backends.memcached.client import (
    KEY_PREFIX,
    LockKeys,
    alive_members,
    member_key,
    store,
)
from conch.backends.memcached.lock import Attempt, MemcachedLock, fenced, free
from conch.backends.memcached.session import MemcachedSession
from conch.errors import BackendUnavailable, LimitMismatch
from conch.introspection import HolderStamp

SEMAPHORE_PREFIX = KEY_PREFIX + b"semaphore:"


def semaphore_keys(name: bytes) -> LockKeys:
    """``conch:semaphore:<sha256 hex>`` (the roster, as ``holder``; its permit keys are
    ``<roster>:<holder id>``) and its ``:token`` counter, apart from the locks' keys."""
    roster = SEMAPHORE_PREFIX + hex_digest(name).encode()
    return LockKeys(roster, roster + b":token")


class MemcachedPermit(MemcachedLock):
    """One semaphore object's permit: the lock's algorithm (waiting, tokens, renewal,
    release) on a permit key of its own, taken only while the roster has room."""

    def __init__(self, session: MemcachedSession, keys: LockKeys, limit: int,
                 name: bytes, stamp: HolderStamp, on_lost: LossCallback) -> None:
        self._holder_id = secrets.token_hex(16)
        super().__init__(session, LockKeys(member_key(keys.holder, self._holder_id),
                                           keys.counter), stamp, on_lost)
        self._roster, self._limit, self._name = keys.holder, limit, name
        # Every release of a permit of this name wakes this process's waiters.
        self._signal = f"{session.options.where} ".encode() + keys.holder

    def _take(self, client: Client, value: bytes, retried: bool) -> Attempt:
        # Each failed cas means another acquire changed the roster: read it again.
        while (listed := self._enter_roster(client, value)) is None:
            pass
        return fenced(client, self._keys, value, self._session.options) if listed \
            else (None, None, 0.0)

    def _enter_roster(self, client: Client, value: bytes) -> bool | None:
        """List this holder, its permit key set first: True; False when the permits are
        all taken; None when the roster changed since it was read."""
        text, cas = client.gets(self._roster)
        limit, listed = _read_roster(text, self._name)
        alive = alive_members(client, self._roster, listed)
        if alive and limit != self._limit:
            raise LimitMismatch(f"semaphore {self._name!r} is in use with limit {limit}, "
                                f"not {self._limit}")
        if self._holder_id not in alive and len(alive) >= self._limit:
            return False
        client.set(self._keys.holder, value, expire=self._session.options.ttl)
        roster = json.dumps({"limit": self._limit,
                             "holders": sorted({*alive, self._holder_id})}).encode()
        if not store(client, self._roster, roster, None if text is None else cas, 0):
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
