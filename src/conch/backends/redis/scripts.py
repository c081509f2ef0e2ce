"""The Lua scripts of the ``redis://`` backend: every lock step is one atomic compare-and-act.

Redis runs a script atomically (no other command interleaves), so a script can
check who holds a lock and act on it without a race. Each script is sent by
SHA-1 (``EVALSHA``); the caller loads it again when the server answers
``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``).

Key layout of one lock name (see :func:`conch.backends.redis.steps.lock_keys`):
``…:holder`` (string, the holder's per-hold value, with the TTL),
``…:token`` (string, the fencing counter, never expires),
``…:wake`` (list, at most one wake-up signal for a waiter, short expiry).
"""

from __future__ import annotations

import hashlib


class Script:
    """A Lua script and the commands that run it."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def call(self, keys: list[bytes], args: list[bytes | int]) -> tuple[object, ...]:
        """The ``EVALSHA`` command running this script on ``keys`` and ``args``."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def load(self) -> tuple[object, ...]:
        """The ``SCRIPT LOAD`` command that makes :meth:`call` work on a server."""
        return ("SCRIPT", "LOAD", self.source)


# KEYS[1] holder key, KEYS[2] token counter key
# ARGV[1] this hold's value, ARGV[2] TTL in milliseconds
# Returns {1, token} when the lock is held with ARGV[1] (now, or already: a retry
# of an acquire whose reply was lost gets the same token back instead of being
# refused by its own lock, which would orphan it until the TTL ends), or
# {0, pttl} when another value holds it, pttl being its remaining milliseconds
# (-1 if someone stored it without a TTL). No other acquire can advance the
# counter while the lock is held, so in the "already" case the counter is the
# hold's token (if someone deleted the counter, a fresh token is issued).
# The token is the counter plus one, or the server clock in microseconds when
# that is more: tokens keep increasing even when the counter is lost (restart
# without persistence) or rolled back (failover to a replica that had not
# received the last write), as long as the server clock does not go back.
# The holder key is written last: a script that fails midway (Redis does not
# roll back its earlier writes) leaves the lock free.
ACQUIRE = Script("acquire", """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  local token = redis.call('GET', KEYS[2])
  if token then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(token)}
  end
elseif holder then
  return {0, redis.call('PTTL', KEYS[1])}
end
local clock = redis.call('TIME')
local now = clock[1] .. string.format('%06d', clock[2])
local last = redis.call('GET', KEYS[2])
local token
if not last or tonumber(last) < tonumber(now) then
  redis.call('SET', KEYS[2], now)
  token = tonumber(now)
else
  token = redis.call('INCR', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, token}
""")

# KEYS[1] holder key, KEYS[2] wake list
# ARGV[1] this hold's value, ARGV[2] wake signal lifetime in milliseconds
# Returns 1 when the lock was held with ARGV[1] and is now free, else 0
# (it expired or another holder has it: nothing is touched).
# The wake list is replaced by one signal: BLPOP hands it to exactly one
# waiter, which retries the acquire; a waiter that arrives just after the
# release still finds it (no lost wake-up), and the expiry removes it when
# nobody waits.
RELEASE = Script("release", """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('LPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
""")

# KEYS[1..n] holder keys of every lock a coordinator holds
# ARGV[1] TTL in milliseconds, ARGV[1 + i] the hold value for KEYS[i]
# Returns a list of n integers: 1 when KEYS[i] was still held with its value
# (its TTL is restarted), 0 when it expired or another holder has it.
# One call renews all of a coordinator's locks: one round-trip per interval.
RENEW = Script("renew", """
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
""")

ALL = (ACQUIRE, RELEASE, RENEW)
