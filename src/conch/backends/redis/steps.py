"""The ``redis://`` lock steps, once for the blocking and the asyncio handles: the keys of
a name, the Lua scripts (run by redis-py's registered scripts) and what their replies mean.
Both handles send these, so blocking and asyncio holders of a name exclude each other,
share its tokens and wake each other's waiters."""

from __future__ import annotations

import time
from typing import NamedTuple

from conch.backends.base import Deadline
from conch.backends.kit.naming import hex_digest
from conch.backends.kit.ttl import new_hold_value
from conch.errors import BackendUnavailable, LockLost
from conch.introspection import HolderStamp

KEY_PREFIX = b"conch:"
WAKE_SIGNAL_MS = 2000
"""How long a release's wake signal waits for a waiter: it bridges a waiter's failed
attempt and its ``BLPOP``; an unused signal costs one retry."""
EXPIRY_SLACK_S = 0.002
"""Past a waiter's bound the holder's key is due to expire: retry just after it."""

# KEYS[1] holder, KEYS[2] token counter; ARGV[1] this hold's value, ARGV[2] TTL in ms.
# Returns {1, token} when ARGV[1] holds the lock (now, or already: a retry of an acquire
# whose reply was lost gets its token back rather than being refused by its own hold),
# {0, pttl} when another value holds it (pttl -1: stored without a TTL).
# While the lock is held no acquire advances the counter, so it is the holder's token.
# A token is the counter plus one, or the server clock in µs when that is more: tokens
# keep increasing when the counter is lost (restart without persistence) or rolled back
# (failover to a lagging replica), as long as the server clock does not go back.
ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return {0, redis.call('PTTL', KEYS[1])}
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local token = redis.call('GET', KEYS[2])
  if token then
    return {1, tonumber(token)}
  end
end
local clock = redis.call('TIME')
local now = clock[1] .. string.format('%06d', clock[2])
local last = redis.call('GETSET', KEYS[2], now)
if last and tonumber(last) >= tonumber(now) then
  redis.call('SET', KEYS[2], last)
  return {1, redis.call('INCR', KEYS[2])}
end
return {1, tonumber(now)}
"""

# KEYS[1] holder, KEYS[2] wake list; ARGV[1] this hold's value, ARGV[2] signal life in ms.
# Returns 1 when ARGV[1] held the lock and it is now free, else 0 (nothing touched).
# The wake list is left with one signal: BLPOP hands it to one waiter, a waiter arriving
# just after the release still finds it, and it expires when nobody waits.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('LPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS[1..n] holder keys of a coordinator's holds; ARGV[1] TTL in ms, ARGV[1 + i] the
# value of KEYS[i]. Returns n integers: 1 when KEYS[i] still had its value (TTL
# restarted), 0 when it expired or another holder has it. One call per beat for all.
RENEW = """
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    renewed[i] = 1
  else
    renewed[i] = 0
  end
end
return renewed
"""

SCRIPTS = (ACQUIRE, RELEASE, RENEW)

Args = list[bytes | int]


class LockKeys(NamedTuple):
    """The Redis keys of one lock name."""

    holder: bytes
    counter: bytes
    wake: bytes


def lock_keys(name: bytes) -> LockKeys:
    """``conch:<sha256 hex>:{holder,token,wake}``: any name, a short distinct key."""
    base = KEY_PREFIX + hex_digest(name).encode()
    return LockKeys(base + b":holder", base + b":token", base + b":wake")


def acquire_call(keys: LockKeys, value: bytes, ttl_ms: int) -> tuple[list[bytes], Args]:
    """The keys and arguments of ACQUIRE; repeating it with the same ``value`` is safe."""
    return [keys.holder, keys.counter], [value, ttl_ms]


def release_call(keys: LockKeys, value: bytes) -> tuple[list[bytes], Args]:
    """The keys and arguments of RELEASE."""
    return [keys.holder, keys.wake], [value, WAKE_SIGNAL_MS]


def acquire_outcome(reply: object, ttl: float) -> tuple[int | None, float]:
    """ACQUIRE's reply: ``(token, 0)``, or ``(None, seconds)`` until the holder's TTL ends."""
    assert isinstance(reply, list) and len(reply) == 2, reply
    acquired, number = int(reply[0]), int(reply[1])
    if acquired:
        return number, 0.0
    return None, ttl if number < 0 else number / 1000 + EXPIRY_SLACK_S


def check_replicas(acknowledged: int, wanted: int, ttl: float, where: str) -> None:
    """Raise when fewer than ``wanted`` replicas acknowledged a hold (``WAIT``'s reply)."""
    if acknowledged < wanted:
        raise BackendUnavailable(
            f"redis at {where}: {wanted} replica(s) must acknowledge a lock (wait_replicas)"
            f" within {ttl / 3:.2f} s; WAIT answered {acknowledged}")


def check_released(keys: LockKeys, reply: object) -> None:
    """Raise :class:`LockLost` when RELEASE found the hold gone (reported lost or not: the
    report may still be on its way to the lock object)."""
    if not reply:
        raise LockLost(
            f"lock key {keys.holder.decode()} expired or changed holder before its "
            "release, unnoticed: was the process paused longer than the TTL?")


def wait_bound(busy_for: float, remaining: float | None, ttl: float) -> float:
    """How long one ``BLPOP`` waits: until the holder's TTL ends or the caller's deadline,
    and at most our own TTL (the waiting connections' reply timeout is sized for it)."""
    bound = min(busy_for, ttl) if remaining is None else min(busy_for, ttl, remaining)
    return max(bound, 0.001)  # BLPOP's 0 is forever


class Acquisition:
    """One acquire's decisions, for a blocking or an awaiting loop: each attempt tries a
    new hold value (a busy answer means the last one holds nothing, and the stamp then
    tells when the hold began); after a busy answer, how long to wait, or to give up."""

    def __init__(self, stamp: HolderStamp, deadline: Deadline, ttl: float) -> None:
        self._stamp = stamp
        self._deadline = deadline
        self._ttl = ttl
        self.value = b""
        self.sent = 0.0

    def next_value(self) -> bytes:
        """The value of the next attempt, sent now."""
        self.value, self.sent = new_hold_value(self._stamp), time.monotonic()
        return self.value

    def wait_for(self, busy_for: float) -> float | None:
        """Seconds to wait in ``BLPOP`` after a busy answer; None: the deadline passed."""
        remaining = self._deadline.remaining()
        return None if remaining == 0 else wait_bound(busy_for, remaining, self._ttl)
