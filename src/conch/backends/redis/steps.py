"""The ``redis://`` lock steps as commands and replies, shared by the blocking and asyncio handles.

Both handles send these commands on these keys, so a blocking and an asyncio
holder of one name exclude each other, draw tokens from one counter and wake
each other's waiters; only how the commands travel differs
(:mod:`conch.backends.redis.client`, :mod:`conch.backends.redis.async_client`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import NamedTuple

from conch.backends.redis.client import Command, RedisOptions
from conch.backends.redis.scripts import ACQUIRE, RELEASE
from conch.errors import BackendUnavailable, LockLost

KEY_PREFIX = b"conch:"
# How long a release's wake signal waits for a waiter: long enough to bridge a
# waiter's failed attempt and its BLPOP; an unused signal only costs one retry.
WAKE_SIGNAL_MS = 2000
# Past a waiter's bound the holder's key is due to expire: retry just after it.
_EXPIRY_SLACK_S = 0.002


class LockKeys(NamedTuple):
    """The Redis keys of one lock name."""

    holder: bytes
    counter: bytes
    wake: bytes


def lock_keys(name: bytes) -> LockKeys:
    """The keys of lock ``name``: its SHA-256, so any bytes map to a short, distinct key."""
    base = KEY_PREFIX + hashlib.sha256(name).hexdigest().encode()
    return LockKeys(base + b":holder", base + b":token", base + b":wake")


@dataclasses.dataclass(eq=False)
class RedisHold:
    """A lock this coordinator holds, kept alive by its heartbeat."""

    keys: LockKeys
    value: bytes
    valid_until: float
    """Monotonic time by which the server frees it unless a renewal succeeds."""


def acquire_commands(keys: LockKeys, value: bytes,
                     options: RedisOptions) -> tuple[list[Command], float]:
    """One attempt to hold ``keys`` with ``value`` (then ``WAIT`` for ``wait_replicas``),
    and how long to wait for each reply. Repeating it with the same ``value`` is safe."""
    commands: list[Command] = [ACQUIRE.call([keys.holder, keys.counter],
                                            [value, options.ttl_ms])]
    timeout = options.socket_timeout
    if options.wait_replicas:
        commands.append(("WAIT", options.wait_replicas, options.ttl_ms // 3))
        timeout += options.ttl / 3
    return commands, timeout


def acquire_outcome(replies: list[object], options: RedisOptions) -> tuple[int | None, float]:
    """What the replies to :func:`acquire_commands` mean: ``(token, 0)``, or ``(None,
    seconds)`` until the current holder's TTL ends. Raises when the script failed or too
    few replicas acknowledged the hold: the caller then frees what it may hold."""
    acquired, number = _pair(replies[0])
    if not acquired:
        return None, options.ttl if number < 0 else number / 1000 + _EXPIRY_SLACK_S
    wanted, acknowledged = options.wait_replicas, replies[-1]
    if wanted and not (isinstance(acknowledged, int) and acknowledged >= wanted):
        raise BackendUnavailable(
            f"redis at {options.where}: {wanted} replica(s) must acknowledge a "
            f"lock (wait_replicas) within {options.ttl / 3:.2f} s; WAIT "
            f"answered {acknowledged}"
        )
    return number, 0.0


def wait_command(keys: LockKeys, seconds: float) -> Command:
    """``BLPOP`` on the wake list of ``keys`` for ``seconds`` (at least 1 ms: 0 is forever)."""
    return ("BLPOP", keys.wake, f"{max(seconds, 0.001):.3f}")


def release_command(hold: RedisHold) -> Command:
    """Free ``hold`` if it still holds its lock, and leave a wake signal for one waiter."""
    return RELEASE.call([hold.keys.holder, hold.keys.wake], [hold.value, WAKE_SIGNAL_MS])


def check_released(hold: RedisHold, reply: object) -> None:
    """Raise :class:`LockLost` when the release of ``hold`` found it gone (reported lost
    or not: the report may still be on its way to the lock object)."""
    if not int_reply(reply):
        raise LockLost(
            f"lock key {hold.keys.holder.decode()} expired or changed holder before its "
            "release, unnoticed: was the process paused longer than the TTL?"
        )


def int_reply(reply: object) -> int:
    """An integer reply; a refused command raises its error."""
    if isinstance(reply, Exception):
        raise reply
    assert isinstance(reply, int), reply
    return reply


def _pair(reply: object) -> tuple[int, int]:
    """A reply of two integers (ACQUIRE's)."""
    if isinstance(reply, Exception):
        raise reply
    assert isinstance(reply, list) and len(reply) == 2, reply
    return int(reply[0]), int(reply[1])
