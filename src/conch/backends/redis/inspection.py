"""Who holds the ``redis://`` locks, and breaking a hold.

A holder key's value is a random hold id, a space, then the hold's stamp
(:class:`conch.introspection.HolderStamp`), so one ``GET`` tells who holds the
lock; its ``PTTL`` is the TTL left, and the name's counter key holds the
holder's token (the acquire that took the lock set it, and no other acquire can
change it while the lock is held). Waiters block in ``BLPOP`` on a list that
does not name them: their number is unknown.

Breaking runs the RELEASE script with the value just read, so it deletes that
hold only (never one that took the lock since) and wakes a waiter; the holder
learns of it at its next renewal, at most ``ttl / 3`` later.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.exceptions import RedisError

from conch.backends.redis.client import Command, RedisClient
from conch.backends.redis.steps import LockKeys, RedisHold
from conch.introspection import HolderChanged, HolderInfo, LockInfo, has_hold_to_break, read_stamp

# Keys per SCAN step and per pipelined batch of reads.
_BATCH = 500


def describe(client: RedisClient, keys: LockKeys, name: bytes) -> tuple[LockInfo, bytes | None]:
    """Lock ``name`` (whose keys are ``keys``) and its holder key's value (None: free)."""
    value, pttl, counter = _replies(client.roundtrip(
        [("GET", keys.holder), ("PTTL", keys.holder), ("GET", keys.counter)]))
    if not isinstance(value, bytes):
        return LockInfo(name, None), None
    return LockInfo(name, _holder(value, pttl, counter)), value


def held_locks(client: RedisClient, key_prefix: bytes) -> list[LockInfo]:
    """Every lock held on the server: a ``SCAN`` of the holder keys, then their values."""
    found: list[LockInfo] = []
    cursor: object = b"0"
    while True:
        reply = _replies(client.roundtrip(
            [("SCAN", cursor, "MATCH", key_prefix + b"*:holder", "COUNT", _BATCH)]))[0]
        assert isinstance(reply, list)
        cursor, holder_keys = reply
        commands: list[Command] = []
        for holder_key in holder_keys:
            counter_key = holder_key[: -len(b"holder")] + b"token"
            commands += [("GET", holder_key), ("PTTL", holder_key), ("GET", counter_key)]
        if commands:
            replies = _replies(client.roundtrip(commands))
            for at in range(0, len(replies), 3):
                value, pttl, counter = replies[at: at + 3]
                if not isinstance(value, bytes):
                    continue  # released since the SCAN
                stamp = read_stamp(_stamp_part(value))
                if stamp is not None:
                    found.append(LockInfo(stamp.key, _holder(value, pttl, counter)))
        if cursor in (b"0", 0, "0"):
            return found


def break_hold(
    client: RedisClient, keys: LockKeys, name: bytes, token: int | None,
    release_command: Callable[[RedisHold], Command],
) -> LockInfo:
    """Delete the hold of lock ``name`` (only the one with ``token``, if given)."""
    lock, value = describe(client, keys, name)
    if not has_hold_to_break(lock, token) or value is None:
        return lock
    deleted = _replies(client.run([release_command(RedisHold(keys, value, 0.0))]))[0]
    if not deleted:
        raise HolderChanged(f"lock {lock.name!r} changed holder while it was being broken")
    return lock


def _holder(value: bytes, pttl: object, counter: object) -> HolderInfo:
    token = int(counter) if isinstance(counter, bytes) and counter.isdigit() else None
    ttl_left = pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None
    stamp = read_stamp(_stamp_part(value))
    if stamp is None:  # a value from before stamps, or written by hand
        return HolderInfo(token=token, ttl_left=ttl_left)
    return stamp.holder(token=token, ttl_left=ttl_left)


def _stamp_part(value: bytes) -> bytes:
    return value.partition(b" ")[2]


def _replies(replies: list[object]) -> list[object]:
    for reply in replies:
        if isinstance(reply, RedisError):
            raise reply
    return replies
