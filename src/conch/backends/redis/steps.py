"""The ``redis://`` lock steps, once for the blocking and the asyncio handles: the keys of
a name, the Lua scripts and what their replies mean, and when an acquire waits before its
first attempt (:class:`Turns`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from redis.exceptions import NoScriptError

from conch.backends.base import Deadline
from conch.backends.kit.naming import hex_digest
from conch.backends.redis.client import RedisOptions
from conch.errors import BackendUnavailable, LockLost

WAKE_SIGNAL_MS = 2000
"""How long a release's wake signal waits for a waiter (from its failed attempt to its
``BLPOP``)."""

# The fencing token rule of every script that grants a hold: the server clock in µs, or
# the counter plus one when that is more (docs/redis.md, "Fencing tokens").
NEXT_TOKEN = """
local function next_token(counter, clock)
  local now = clock[1] * 1000000 + clock[2]
  local last = tonumber(redis.call('GETSET', counter, now))
  if last and last >= now then
    redis.call('SET', counter, last)
    return redis.call('INCR', counter)
  end
  return now
end
"""

# KEYS[1] holder, KEYS[2] token counter; ARGV[1] this hold's value, ARGV[2] TTL in ms,
# ARGV[3] 1 when retrying an attempt whose reply was lost (it may hold the lock already).
# Returns {1, token} when ARGV[1] holds the lock (now, or already: a retry gets its token
# back rather than being refused by its own hold), {0, pttl} when another value holds it.
# While the lock is held no acquire advances the counter, so it is the holder's token.
ACQUIRE = NEXT_TOKEN + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] ~= '1' or redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return {0, redis.call('PTTL', KEYS[1])}
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local token = redis.call('GET', KEYS[2])
  if token then return {1, tonumber(token)} end
end
return {1, next_token(KEYS[2], redis.call('TIME'))}
"""

# KEYS[1] holder, KEYS[2] wake list; ARGV[1] this hold's value, ARGV[2] signal life in ms.
# Returns 1 when ARGV[1] held the lock, now free, else 0 (nothing touched). The wake list
# is left with one signal, the released hold's value, for one waiter (Turns).
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS[1..n] a coordinator's holder keys; ARGV[1] TTL in ms, ARGV[1 + i] KEYS[i]'s value.
# Returns n integers: 1 when KEYS[i] still had its value (TTL restarted), else 0.
RENEW = """
local renewed = {}
for i, key in ipairs(KEYS) do
  renewed[i] = redis.call('GET', key) == ARGV[i + 1] and redis.call('PEXPIRE', key, ARGV[1])
    or 0
end
return renewed
"""

SCRIPTS = (ACQUIRE, RELEASE, RENEW)
KEY_PREFIX = b"conch:"
ScriptArgs = Sequence[bytes | int]
ScriptCall = tuple[str, Sequence[bytes], ScriptArgs]
"""A script's source, keys and other arguments."""
Outcome = tuple[int | None, float]
"""An acquire's answer: ``(token, 0)``, or ``(None, seconds)`` until the holder's TTL ends."""


class LockKeys(NamedTuple):
    """The Redis keys of one lock name."""

    holder: bytes
    counter: bytes
    wake: bytes


def lock_keys(name: bytes) -> LockKeys:
    """``conch:<sha256 hex>:{holder,token,wake}``: any name, a short distinct key."""
    base = KEY_PREFIX + hex_digest(name).encode()
    return LockKeys(base + b":holder", base + b":token", base + b":wake")


def acquire_call(keys: LockKeys, value: bytes, ttl_ms: int, retrying: bool) -> ScriptCall:
    """ACQUIRE of ``keys`` with ``value`` (``retrying``: it may hold them already)."""
    return ACQUIRE, keys[:2], (value, ttl_ms, 1) if retrying else (value, ttl_ms)


def release_call(keys: LockKeys, value: bytes) -> ScriptCall:
    """RELEASE of ``keys`` held with ``value``."""
    return RELEASE, (keys.holder, keys.wake), (value, WAKE_SIGNAL_MS)


def acquire_outcome(reply: list[int], ttl: float) -> Outcome:
    """ACQUIRE's reply: ``(token, 0)``, or ``(None, seconds)`` until the holder's TTL ends."""
    acquired, number = int(reply[0]), int(reply[1])
    return (number, 0.0) if acquired else (None, busy_seconds(number, ttl))


def busy_seconds(ms: int, ttl: float) -> float:
    """Until a lease seen ``ms`` ms from its end is over (just after: the key is due to
    expire then); ``ttl`` if it has none."""
    return ttl if ms < 0 else ms / 1000 + 0.002


def checked(replies: list[Any]) -> list[Any] | None:
    """The replies of ``BLPOP`` then a script; None when the server lost the script."""
    if isinstance(replies[1], NoScriptError):
        return None
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def outcome_after_wait(replies: list[Any] | None,
                       options: RedisOptions) -> tuple[Outcome | None, bytes | None]:
    """ACQUIRE's outcome from :func:`checked` replies, and the wake signal the wait took
    (None: it timed out). No outcome: ACQUIRE again, retrying (the script was lost, or the
    hold waits for replicas)."""
    if replies is None:
        return None, None
    outcome = acquire_outcome(replies[1], options.ttl)
    granted = outcome[0] is not None
    return None if granted and options.wait_replicas else outcome, replies[0] and replies[0][1]


def wait_seconds(busy_for: float, deadline: Deadline, ttl: float) -> float | None:
    """How long one ``BLPOP`` waits after a busy answer: until the holder's TTL ends or the
    deadline, at most our TTL; None: the deadline passed."""
    remaining = deadline.remaining()
    if remaining == 0:
        return None
    return max(0.001, min(busy_for, ttl, ttl if remaining is None else remaining))


def check_replicas(acknowledged: int, options: RedisOptions) -> None:
    """Raise when fewer than ``wait_replicas`` replicas acknowledged a hold (``WAIT``)."""
    if acknowledged < options.wait_replicas:
        raise BackendUnavailable(
            f"redis at {options.where}: {options.wait_replicas} replica(s) must acknowledge a"
            f" lock (wait_replicas) within {options.ttl / 3:.2f} s; WAIT answered {acknowledged}")


def check_released(keys: LockKeys, reply: int) -> None:
    """Raise :class:`LockLost` when RELEASE found the hold gone."""
    if not reply:
        raise LockLost(f"lock key {keys.holder.decode()} expired or changed holder before "
                       "its release, unnoticed: was the process paused longer than the TTL?")


QUEUE_WINDOW = WAKE_SIGNAL_MS / 2000
"""Seconds after its release within which a lock object that met contention waits first
(well inside the signal's life)."""


class Turns:
    """When a lock object's acquire waits for a release before its first attempt: shortly
    after its own release, if its last acquire met contention (docs/redis.md, "Taking
    turns")."""

    __slots__ = ("_contended", "_released", "_released_at")

    def __init__(self) -> None:
        self._contended = False
        self._released = b""
        self._released_at = -math.inf

    def first_wait(self, deadline: Deadline, ttl: float) -> float | None:
        """Seconds to wait before the first attempt; None: try at once."""
        if not self._contended or time.monotonic() - self._released_at > QUEUE_WINDOW:
            return None
        return wait_seconds(ttl, deadline, ttl)

    def acquired(self, met_holder: bool, signal: bytes | None) -> None:
        """An acquire got the lock after finding it held (``met_holder``), or its first
        wait took ``signal`` (None: none)."""
        self._contended = met_holder or signal not in (None, self._released)
        self._released_at = -math.inf

    def released(self, value: bytes) -> None:
        """The hold with ``value`` was released (its signal pushed) just now."""
        self._released, self._released_at = value, time.monotonic()
