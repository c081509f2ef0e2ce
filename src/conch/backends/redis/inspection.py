"""Who holds the ``redis://`` locks (``conch show``), and breaking a hold (``conch break``).

A holder key's value is a random hold id, a space, then the hold's stamp; its ``PTTL`` is
the TTL left and the counter key holds the holder's token. Breaking runs RELEASE with the
value just read: it deletes that hold only, and wakes a waiter."""

from __future__ import annotations

from typing import Any

import redis

from conch.backends.redis.session import RedisSession
from conch.backends.redis.steps import KEY_PREFIX, LockKeys, release_call
from conch.introspection import HolderChanged, HolderInfo, LockInfo, has_hold_to_break, read_stamp

_BATCH = 500
"""Keys per ``SCAN`` step and per pipelined batch of reads."""


def describe(client: redis.Redis, keys: LockKeys, name: bytes) -> tuple[LockInfo, bytes | None]:
    """Lock ``name`` (whose keys are ``keys``) and its holder key's value (None: free)."""
    value, pttl, counter = _read(client, [keys.holder])
    if not isinstance(value, bytes):
        return LockInfo(name, None), None
    return LockInfo(name, _holder(value, pttl, counter)), value


def held_locks(client: redis.Redis) -> list[LockInfo]:
    """Every lock held on the server: a ``SCAN`` of the holder keys, then their values."""
    found: list[LockInfo] = []
    cursor = 0
    while True:
        cursor, holder_keys = client.scan(cursor, match=KEY_PREFIX + b"*:holder", count=_BATCH)
        replies = _read(client, holder_keys)
        for at in range(0, len(replies), 3):
            value, pttl, counter = replies[at: at + 3]
            stamp = read_stamp(_stamp_part(value)) if isinstance(value, bytes) else None
            if stamp is not None:  # else released since the SCAN
                found.append(LockInfo(stamp.key, _holder(value, pttl, counter)))
        if not cursor:
            return found


def break_hold(session: RedisSession, keys: LockKeys, name: bytes, token: int | None) -> LockInfo:
    """Delete the hold of lock ``name`` (only the one with ``token``, if given) with RELEASE."""
    lock, value = describe(session.commands, keys, name)
    if not has_hold_to_break(lock, token) or value is None:
        return lock
    if not session.run(release_call(keys, value)):
        raise HolderChanged(f"lock {lock.name!r} changed holder while it was being broken")
    return lock


def _read(client: redis.Redis, holder_keys: list[Any]) -> list[Any]:
    """Value, ``PTTL`` and token of each holder key, in one round-trip."""
    pipeline = client.pipeline(transaction=False)
    for holder_key in holder_keys:
        pipeline.get(holder_key)
        pipeline.pttl(holder_key)
        pipeline.get(holder_key[: -len(b"holder")] + b"token")
    return pipeline.execute() if holder_keys else []


def _holder(value: bytes, pttl: object, counter: object) -> HolderInfo:
    token = int(counter) if isinstance(counter, bytes) and counter.isdigit() else None
    ttl_left = pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None
    stamp = read_stamp(_stamp_part(value))  # None: a value from before stamps, or by hand
    return HolderInfo(token=token, ttl_left=ttl_left) if stamp is None else \
        stamp.holder(token=token, ttl_left=ttl_left)


def _stamp_part(value: bytes) -> bytes:
    return value.partition(b" ")[2]
