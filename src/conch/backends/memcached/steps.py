"""The ``memcached://`` lock steps on one connection: take, count the token, free, extend.

memcached has no scripts: each step is a short sequence of calls whose last one
acts only if nothing changed since the first (``add`` only on an absent key,
``cas`` and the meta compare-and-delete only on an unchanged CAS id), so no step
ever acts on a lock another holder took meanwhile. The backend
(:mod:`conch.backends.memcached.backend`) runs them through its connection pool and
translates their errors; a step never retries on another connection itself.

The fencing token and the restart grace period live here: a missing counter is
re-created from the wall clock in µs, and a server found without its epoch key
(it lost its state) grants nothing until a grace key, set to expire after one
TTL, is gone.
"""

from __future__ import annotations

import logging
import time

from pymemcache.client.base import Client  # type: ignore[import-untyped]

from conch.backends.memcached.client import (
    KEY_PREFIX,
    LockKeys,
    MemcachedOptions,
    compare_and_delete,
)
from conch.errors import BackendUnavailable

log = logging.getLogger("conch")

EPOCH_KEY = KEY_PREFIX + b"epoch"
GRACE_KEY = KEY_PREFIX + b"grace"
# During a restart grace period (seconds long) waiters poll more slowly.
GRACE_POLL = 0.05
# A compare-and-delete (or a renewal's cas) finds the CAS id changed when our own
# renewal (or release) changed the key after the read: read again, a few times at most.
CAS_TRIES = 3


def take(client: Client, keys: LockKeys, value: bytes, options: MemcachedOptions,
         retried: bool) -> tuple[int | None, float]:
    """Hold ``keys`` with ``value``: ``(token, 0)`` or, when busy, ``(None, seconds to
    pause at least)``. ``retried``: an earlier try, whose reply was lost, may have stored it."""
    # After a lost reply our own add may have stored it: then it is ours.
    if not client.add(keys.holder, value, expire=options.ttl) \
            and not (retried and client.get(keys.holder) == value):
        return None, 0.0
    token = next_token(client, keys, options)
    if token is None:  # restart grace: hold nothing until it ends
        free(client, keys, value)
        return None, GRACE_POLL
    return token, 0.0


def next_token(client: Client, keys: LockKeys, options: MemcachedOptions) -> int | None:
    """The fencing token of a hold just taken, or ``None`` during a restart grace period."""
    token = client.incr(keys.counter, 1)
    if token is None:  # no counter: a new name, an eviction, or a server that lost its state
        if in_grace(client, options):
            return None
        client.add(keys.counter, str(time.time_ns() // 1000).encode(), expire=0)
        token = client.incr(keys.counter, 1)
        if token is None:
            raise BackendUnavailable(f"memcached at {options.where} evicts the fencing "
                                     f"counter as soon as it is stored: give it more memory")
    return int(token)


def in_grace(client: Client, options: MemcachedOptions) -> bool:
    """True while the server may still have holders from before it lost its state."""
    found = client.get_many([EPOCH_KEY, GRACE_KEY])
    if EPOCH_KEY not in found:
        # Grace first: whoever sees the epoch then sees the grace key until it expires.
        client.add(GRACE_KEY, b"restart", expire=options.ttl)
        client.add(EPOCH_KEY, str(time.time_ns() // 1000).encode(), expire=0)
        log.warning("memcached at %s lost its state (restart, flush, or first use): no "
                    "lock is granted for %d s", options.where, options.ttl)
    return GRACE_KEY in found or EPOCH_KEY not in found


def free(client: Client, keys: LockKeys, value: bytes) -> bool:
    """Delete ``keys.holder`` if it holds ``value``; False when it does not."""
    for _ in range(CAS_TRIES):
        found, cas = client.gets(keys.holder)
        if found != value:
            return False
        reply = compare_and_delete(client, keys.holder, cas)
        if reply != b"EX":
            return reply == b"HD"
    return False


def extend(client: Client, key: bytes, value: bytes, found: tuple[bytes, bytes] | None,
           ttl: int) -> bool:
    """Reset ``key``'s expiry to ``ttl`` if it still holds ``value`` (``found``: the value
    and CAS id just read, ``None``: no such key)."""
    for _ in range(CAS_TRIES):
        if found is None or found[0] != value:
            return False
        # cas, not touch: touch would extend a key another holder set since the read.
        if client.cas(key, value, found[1], expire=ttl):
            return True
        value_read, cas = client.gets(key)
        found = None if value_read is None else (value_read, cas)
    return False
