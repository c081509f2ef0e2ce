"""The ``redis://`` keys and scripts of shared holds, semaphore permits and waiting writers,
each an entry of a sorted set scored by the server time (ms) its lease ends. Layout, wake-ups
and what a mixed fleet gets: docs/redis.md, "Shared locks and semaphores"."""

from __future__ import annotations

from typing import NamedTuple

from conch.backends.kit.naming import hex_digest
from conch.backends.redis.steps import KEY_PREFIX, NEXT_TOKEN, WAKE_SIGNAL_MS, LockKeys

# Shared by every script: the server clock, a wake signal, a lease floor, and the fencing
# token rule of the locks (steps.NEXT_TOKEN).
_COMMON = NEXT_TOKEN + f"""
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
local function signal(list)
  redis.call('LPUSH', list, '1')
  redis.call('PEXPIRE', list, {WAKE_SIGNAL_MS})
end
local function keep_for(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
"""

# KEYS[1] holder, [2] token counter, [3] readers, [4] waiting writers, [5] wake list,
# [6] readers' wake list; ARGV[1] this hold's value, [2] TTL in ms, [3] the KEYS index of
# the list just waited on (0: none). The readers' set has '=' .. the holder's value
# (score inf) while the holder key is theirs. Returns {1, token, holder value} when
# granted; {0, ms, KEYS index of the list to wait on} when an exclusive holder (5) or a
# waiting writer (6) is in the way, after passing on a signal meant for others.
SHARED_ACQUIRE = _COMMON + """
local ttl, waited = tonumber(ARGV[2]), tonumber(ARGV[3])
local function busy(ms, list)
  if waited ~= 0 and waited ~= list then signal(KEYS[waited]) end
  return {0, ms, list}
end
local holder = redis.call('GET', KEYS[1])
if holder and not redis.call('ZSCORE', KEYS[3], '=' .. holder) then
  return busy(redis.call('PTTL', KEYS[1]), 5)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now_ms)
local writer = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if writer[1] then return busy(tonumber(writer[2]) - now_ms, 6) end
if holder then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
else
  holder = ARGV[1]
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[1], holder, 'PX', ttl)
  redis.call('ZADD', KEYS[3], 'inf', '=' .. holder)
end
redis.call('ZADD', KEYS[3], now_ms + ttl, ARGV[1])
keep_for(KEYS[1], ttl)
keep_for(KEYS[3], ttl)
if waited ~= 0 then signal(KEYS[waited]) end
return {1, next_token(KEYS[2], clock), holder}
"""

# KEYS[1] permits, [2] token counter, [3] limit, [4] wake list; ARGV as SHARED_ACQUIRE,
# then [4] the limit. Replies as SHARED_ACQUIRE (the guard value empty), or {-1, limit}
# when the holders use another limit.
PERMIT_ACQUIRE = _COMMON + """
local ttl, limit = tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local held = redis.call('ZCARD', KEYS[1])
local used = held > 0 and redis.call('GET', KEYS[3])
if used and used ~= ARGV[4] then return {-1, tonumber(used)} end
if held >= limit and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {0, tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) - now_ms, 4}
end
redis.call('ZADD', KEYS[1], now_ms + ttl, ARGV[1])
redis.call('SET', KEYS[3], ARGV[4], 'KEEPTTL')
keep_for(KEYS[1], ttl)
keep_for(KEYS[3], ttl)
if ARGV[3] ~= '0' and held + 1 < limit then signal(KEYS[4]) end
return {1, next_token(KEYS[2], clock), ''}
"""

# Releases, KEYS[1] the entries, [2] their guard key, [3] wake list; ARGV[1] this hold's
# value, [2] the guard's value. Returns 1 when the hold was alive, else 0. A shared hold
# checks its guard (the holder value it joined), and the last one frees the holder key
# and wakes the waiters; a permit wakes one.
_LEFT = """
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
"""
SHARED_RELEASE = _COMMON + _LEFT + """
if not lease or tonumber(lease) <= now_ms or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
if redis.call('ZCARD', KEYS[1]) <= 1 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  signal(KEYS[3])
end
return 1
"""
PERMIT_RELEASE = _COMMON + _LEFT + """
if not lease or tonumber(lease) <= now_ms then return 0 end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
redis.call('DEL', KEYS[3])
signal(KEYS[3])
return 1
"""

# KEYS[1] readers, [2] waiting writers; ARGV[1] this writer's value, [2] TTL in ms.
# Returns 1 when it now waits as a writer, 0 when the lock has no shared holders (then
# there is nobody to hold back).
WRITER_WAITS = _COMMON + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[1])
keep_for(KEYS[2], tonumber(ARGV[2]))
return 1
"""

# KEYS[1] waiting writers, [2] readers' wake list; ARGV[1] this writer's value. The last
# writer to stop waiting wakes the shared waiters it held back.
WRITER_DONE = _COMMON + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  signal(KEYS[2])
end
return 1
"""

# KEYS[2i-1] an entry's set, KEYS[2i] its guard key; ARGV[1] TTL in ms, ARGV[2i] the
# entry, ARGV[2i+1] the guard's value ('' for none). Returns per entry 1 when it was alive
# (and its guard had that value): its lease, its set's and its guard's TTL restarted.
RENEW_ENTRIES = _COMMON + """
local ttl, renewed = tonumber(ARGV[1]), {}
for i = 1, #KEYS / 2 do
  local set, guard, entry, value = KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 * i], ARGV[2 * i + 1]
  local lease = redis.call('ZSCORE', set, entry)
  renewed[i] = 0
  if lease and tonumber(lease) > now_ms
      and (value == '' or redis.call('GET', guard) == value) then
    redis.call('ZADD', set, now_ms + ttl, entry)
    keep_for(set, ttl)
    keep_for(guard, ttl)
    renewed[i] = 1
  end
end
return renewed
"""

SCRIPTS = (SHARED_ACQUIRE, SHARED_RELEASE, PERMIT_ACQUIRE, PERMIT_RELEASE, WRITER_WAITS,
           WRITER_DONE, RENEW_ENTRIES)


class SharedKeys(NamedTuple):
    """The keys of a lock name's shared side, beside its exclusive :class:`LockKeys`."""

    lock: LockKeys
    readers: bytes
    writers: bytes
    readers_wake: bytes


class PermitKeys(NamedTuple):
    """The keys of one semaphore name (``conch:semaphore:<sha256 hex>:...``)."""

    permits: bytes
    counter: bytes
    limit: bytes
    wake: bytes


class Entry(NamedTuple):
    """What a renewal checks of an entry: its set, and a key that must keep a value
    (``guard_value`` empty: none)."""

    entries: bytes
    guard: bytes
    guard_value: bytes


def shared_keys(lock: LockKeys) -> SharedKeys:
    """The shared side's keys: the lock's own prefix, then readers, writers, readers-wake."""
    base = lock.holder.removesuffix(b":holder")
    return SharedKeys(lock, base + b":readers", base + b":writers", base + b":readers-wake")


def permit_keys(name: bytes) -> PermitKeys:
    """A namespace apart from the locks' (theirs is ``conch:<hex>:...``)."""
    base = KEY_PREFIX + b"semaphore:" + hex_digest(name).encode()
    return PermitKeys(base + b":permits", base + b":token", base + b":limit", base + b":wake")
