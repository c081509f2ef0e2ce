"""``memcached://`` groups: a roster key per group, an entry key per member (docs/memcached.md)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator

from conch.backends.base import GroupStore, LossCallback
from conch.backends.kit.naming import hex_digest
from conch.backends.kit.ttl import TtlHold
from conch.backends.memcached.client import KEY_PREFIX, MemcachedClient, MemcachedSession
from conch.backends.memcached.lock import pauses
from conch.errors import BackendUnavailable, GroupNotEmpty, GroupNotFound

REGISTRY_KEY = KEY_PREFIX + b"groups"  # the JSON list of the groups' names (hex)
POLL_INTERVAL = 1.0  # seconds between two reads of a watched group (at most the renewal beat)


def roster_key(group: bytes) -> bytes:
    """``conch:group:<sha256 hex>``: the JSON list of the group's member ids."""
    return KEY_PREFIX + b"group:" + hex_digest(group).encode()


def entry_key(group: bytes, member_id: str) -> bytes:
    """``conch:group:<sha256 hex>:<sha256 hex of the member id>``: its entry."""
    member = member_id.encode("utf-8", "surrogatepass")
    return roster_key(group) + b":" + hex_digest(member).encode()


class MemcachedGroupStore(GroupStore):
    """One coordinator's groups (:class:`conch.Group` serialises the calls for one)."""

    def __init__(self, session: MemcachedSession, member_id: str) -> None:
        self.poll_interval = min(POLL_INTERVAL, session.ttl.interval)
        self._session, self._member_id = session, member_id
        self._entries: dict[bytes, TtlHold[bytes]] = {}

    def create(self, group: bytes) -> bool:
        def create(client: MemcachedClient, retried: bool) -> bool:
            created = bool(client.add(roster_key(group), b"[]", expire=0))
            # Written even when listed: a delete removing it meanwhile then reads again.
            self._update(client, REGISTRY_KEY, lambda names: _with(names, group.hex()), True)
            return created
        return self._session.call(create)

    def delete(self, group: bytes) -> None:
        def delete(client: MemcachedClient, retried: bool) -> None:
            attempts = self._contended(roster_key(group))
            while True:
                # The CAS id before the members: a join after the read fails the delete.
                found, cas = client.gets(roster_key(group))
                live = None if found is None else self._live(client, group)
                if live is None:
                    raise GroupNotFound(f"group {group!r} does not exist")
                if live:
                    raise GroupNotEmpty(f"group {group!r} still has {len(live)} members")
                if client.compare_and_delete(roster_key(group), cas) != b"EX":
                    break  # EX: joined or pruned since the read
                time.sleep(next(attempts))
            # Listed until its roster is gone: a create arriving meanwhile keeps it.
            self._update(client, REGISTRY_KEY, lambda names: None if client.get(
                roster_key(group)) is not None else _without(names, group.hex()), False)
        self._session.call(delete)

    def names(self) -> list[bytes]:
        def names(client: MemcachedClient, retried: bool) -> list[bytes]:
            listed = [bytes.fromhex(name)
                      for name in self._decode(REGISTRY_KEY, client.get(REGISTRY_KEY))]
            existing = client.get_many([roster_key(name) for name in listed])
            return [name for name in listed if roster_key(name) in existing]
        return self._session.call(names)

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        key = entry_key(group, self._member_id)
        value = secrets.token_hex(16).encode() + b" " + data
        member, ttl = self._member_id, self._session.options.ttl

        def enter(client: MemcachedClient, retried: bool) -> None:
            def listed(members: list[str]) -> list[str]:
                # Written even when listed (a read pruning it meanwhile then reads again),
                # without the dead: the roster stays bounded when nobody reads it.
                return _with(list(self._entries_of(client, group, members)), member)

            # The entry first, then the roster: a read between sees it absent, not dead.
            if client.get(roster_key(group)) is not None:
                client.set(key, value, expire=ttl)
                if self._update(client, roster_key(group), listed, False) is not None:
                    return
                client.delete(key)
            raise GroupNotFound(f"group {group!r} does not exist")

        self._entries[group] = self._session.ttl.replace(
            self._entries.get(group), key, value, lambda: self._session.call(enter), on_lost)

    def leave(self, group: bytes) -> bool:
        if (hold := self._entries.pop(group, None)) is not None:
            self._session.ttl.discard(hold)

        def leave(client: MemcachedClient, retried: bool) -> bool:
            listed = self._update(client, roster_key(group),
                                  lambda members: _without(members, self._member_id), False)
            return bool(client.delete(entry_key(group, self._member_id))) or bool(listed)
        return self._session.call(leave)

    def members(self, group: bytes) -> dict[str, bytes] | None:
        return self._session.call(lambda client, retried: self._live(client, group))

    def _live(self, client: MemcachedClient, group: bytes) -> dict[str, bytes] | None:
        """The live members' data; those whose entry expired are pruned from the roster."""
        live: dict[str, bytes] = {}

        def prune(members: list[str]) -> list[str] | None:
            nonlocal live
            live = self._entries_of(client, group, members)
            return None if len(live) == len(members) else list(live)

        return None if self._update(client, roster_key(group), prune, False) is None else live

    def _entries_of(self, client: MemcachedClient, group: bytes,
                    members: list[str]) -> dict[str, bytes]:
        keys = {member: entry_key(group, member) for member in members}
        found = client.get_many(list(keys.values()))
        return {member: found[key].partition(b" ")[2] for member, key in keys.items()
                if key in found}

    def _update(self, client: MemcachedClient, key: bytes,
                change: Callable[[list[str]], list[str] | None], create: bool) -> bool | None:
        """Replace the JSON list at ``key`` by ``change(list)`` by CAS: True written, False
        ``change`` said None, None no such key (and not ``create``)."""
        attempts = self._contended(key)
        while True:
            found, cas = client.gets(key)
            if found is None and not create:
                return None
            changed = change(self._decode(key, found))
            if changed is None:
                return False
            if client.store(key, json.dumps(changed).encode(), None if found is None else cas, 0):
                return True
            time.sleep(next(attempts))

    def _contended(self, key: bytes) -> Iterator[float]:
        """Pauses between two tries to change ``key``, for one reply timeout at most."""
        options = self._session.options
        deadline, waits = time.monotonic() + options.timeout, pauses()
        while time.monotonic() < deadline:
            yield next(waits)
        raise BackendUnavailable(f"memcached at {options.where}: {key.decode()} kept changing "
                                 f"for {options.timeout} s (timeout)")

    def _decode(self, key: bytes, value: bytes | None) -> list[str]:
        try:
            items = [] if value is None else json.loads(value)
        except ValueError:
            items = None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise BackendUnavailable(f"memcached at {self._session.options.where}: "
                                     f"{key.decode()} holds something else than conch's list")
        return items


def _with(items: list[str], item: str) -> list[str]:
    return items if item in items else [*items, item]


def _without(items: list[str], item: str) -> list[str] | None:
    return [other for other in items if other != item] if item in items else None
