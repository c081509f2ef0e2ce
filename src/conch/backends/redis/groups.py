"""``redis://`` groups: per group a hash of member id → entry, and per member a key with the
lease TTL, renewed while the coordinator runs; changes are published on one channel.
docs/redis.md, "Groups"."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from typing import NamedTuple

import redis
from redis.exceptions import RedisError

from conch.backends.base import GroupStore, LossCallback
from conch.backends.kit.group_subscribers import GroupSubscribers, Wake
from conch.backends.kit.naming import hex_digest
from conch.backends.kit.ttl import TtlHold, TtlSession
from conch.backends.redis import steps
from conch.backends.redis.session import RedisSession, retry_once
from conch.errors import GroupNotEmpty, GroupNotFound

log = logging.getLogger("conch")
READ_SLICE = 1.0
"""Seconds one read of the channel waits: how long its thread may outlive ``close()``."""
RECONNECT_PAUSE = 0.5
"""Seconds between two attempts to subscribe again while the server does not answer."""
GROUPS_KEY = b"conch:groups"
"""The set of the names of the groups that exist (lock keys are ``conch:<hex>:...``)."""

# Every script but LEAVE: KEYS[1] GROUPS_KEY, KEYS[2] the group's entries; ARGV[1] the
# group name, ARGV[2] member key prefix, ARGV[3] channel, ARGV[4] group digest. Replies nil
# when the group does not exist; else it has the live entries (member id, entry...),
# pruning (HDEL, published) those whose member key (prefix .. SHA-1 of the id) is gone.
_LIVE_ENTRIES = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return false end
local entries, live, pruned = redis.call('HGETALL', KEYS[2]), {}, false
for i = 1, #entries, 2 do
  if redis.call('EXISTS', ARGV[2] .. redis.sha1hex(entries[i])) == 1 then
    live[#live + 1] = entries[i]
    live[#live + 1] = entries[i + 1]
  else
    redis.call('HDEL', KEYS[2], entries[i])
    pruned = true
  end
end
if pruned then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
"""

# Returns member id, entry, member id, entry... of the live members.
MEMBERS = _LIVE_ENTRIES + "return live"

# Returns the number of live members: 0 when the group was deleted.
DELETE = _LIVE_ENTRIES + """
if #live > 0 then return #live / 2 end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 0
"""

# KEYS[3] this member's key; ARGV[5] member id, ARGV[6] entry, ARGV[7] hold id, ARGV[8]
# TTL in ms. Returns 1. Joining again (new data) is not published.
JOIN = _LIVE_ENTRIES + """
local arriving = redis.call('EXISTS', KEYS[3]) == 0
redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[8])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
if arriving then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""

# KEYS[1] the group's entries, KEYS[2] this member's key; ARGV[1] member id, ARGV[2]
# channel, ARGV[3] group digest. Returns 1 when the member was in the group, else 0.
LEAVE = """
local was_in = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if was_in == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return was_in
"""


class GroupKeys(NamedTuple):
    """The Redis keys of one group."""

    entries: bytes
    member_prefix: bytes
    digest: bytes

    def member(self, member_id: bytes) -> bytes:
        """The key of ``member_id``'s hold id (its liveness), as the scripts find it."""
        return self.member_prefix + hashlib.sha1(member_id).hexdigest().encode()


def group_keys(group: bytes) -> GroupKeys:
    """``conch:group:<sha256 hex>:entries`` and ``...:member:<sha1 of the member id>``."""
    digest = hex_digest(group).encode()
    base = b"conch:group:" + digest
    return GroupKeys(base + b":entries", base + b":member:", digest)


class RedisGroupStore(GroupStore):
    """One coordinator's groups on its session's master (one call per group at a time)."""

    def __init__(self, session: RedisSession, member_id: str) -> None:
        options = session.options
        self.poll_interval = options.ttl / 3  # a dead member is found by a read: each beat
        self._session, self._commands = session, session.commands
        self._member_id = member_id.encode("utf-8", "surrogatepass")
        self._channel = b"conch:group-changes:%d" % options.master["db"]
        session.register(MEMBERS, DELETE, JOIN, LEAVE)
        # Member keys are renewed with steps.RENEW, by the groups' own TTL session.
        self._ttl = TtlSession("redis", options.ttl, self._renew, session.describe, (RedisError,))
        self._ttl.start()
        self._entries: dict[bytes, TtlHold[bytes]] = {}
        self._changes = GroupSubscribers("conch-redis-group-changes", self._listen)

    def create(self, group: bytes) -> bool:
        with self._session.calls():
            return bool(retry_once(lambda _: self._commands.sadd(GROUPS_KEY, group)))

    def delete(self, group: bytes) -> None:
        keys = group_keys(group)
        live = self._session.run((DELETE, [GROUPS_KEY, keys.entries],
                                  self._read_args(group, keys)), idempotent=False)
        if live is None:
            raise GroupNotFound(f"group {group!r} does not exist")
        if live > 0:
            raise GroupNotEmpty(f"group {group!r} still has {live} members")

    def names(self) -> list[bytes]:
        with self._session.calls():
            names = retry_once(lambda _: self._commands.smembers(GROUPS_KEY))
        return [name for name in names if isinstance(name, bytes)]

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        keys, hold_id = group_keys(group), secrets.token_hex(16).encode()
        member_key = keys.member(self._member_id)
        args = [*self._read_args(group, keys), self._member_id, data, hold_id,
                self._session.options.ttl_ms]

        def write() -> None:
            if not self._session.run((JOIN, [GROUPS_KEY, keys.entries, member_key], args)):
                raise GroupNotFound(f"group {group!r} does not exist")

        self._entries[group] = self._ttl.replace(self._entries.get(group), member_key,
                                                 hold_id, write, on_lost)

    def leave(self, group: bytes) -> bool:
        keys = group_keys(group)
        if (hold := self._entries.pop(group, None)) is not None:
            self._ttl.discard(hold)
        return bool(self._session.run((LEAVE, [keys.entries, keys.member(self._member_id)],
                                       [self._member_id, self._channel, keys.digest])))

    def members(self, group: bytes) -> dict[str, bytes] | None:
        keys = group_keys(group)
        found = self._session.run((MEMBERS, [GROUPS_KEY, keys.entries],
                                   self._read_args(group, keys)))
        if found is None:
            return None
        return {member.decode("utf-8", "surrogatepass"): entry
                for member, entry in zip(found[::2], found[1::2], strict=True)}

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        return self._changes.subscribe(group_keys(group).digest, changed)

    def _listen(self, stopped: threading.Event, wake: Wake) -> None:
        """Wake the watchers of each group a message names; after a lost connection,
        subscribe again and wake them all."""
        pubsub: redis.client.PubSub | None = None
        while not stopped.is_set():
            try:
                if pubsub is None:
                    pubsub = self._commands.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self._channel)
                    wake(None)
                message = pubsub.get_message(timeout=READ_SLICE)
                if message is not None and message["type"] == "message":
                    wake((message["data"],))
            except (RedisError, OSError) as exc:
                if stopped.is_set():
                    break
                log.debug("conch: redis group changes: %s; subscribing again", exc)
                _closed(pubsub)
                pubsub = None
                stopped.wait(RECONNECT_PAUSE)
        _closed(pubsub)

    def close(self) -> None:
        """Stop listening and renewing (the coordinator stops, its groups left)."""
        self._changes.stop()
        self._ttl.stop()

    def _read_args(self, group: bytes, keys: GroupKeys) -> list[bytes | int]:
        return [group, keys.member_prefix, self._channel, keys.digest]

    def _renew(self, holds: list[TtlHold[bytes]], within: float) -> list[bool]:
        return self._session.renew(steps.RENEW, [hold.keys for hold in holds],
                                   [self._session.options.ttl_ms, *(hold.value for hold in holds)])


def _closed(pubsub: redis.client.PubSub | None) -> None:
    """Close ``pubsub`` if any (its connection may be broken already)."""
    if pubsub is not None:
        with contextlib.suppress(RedisError, OSError):
            pubsub.close()
