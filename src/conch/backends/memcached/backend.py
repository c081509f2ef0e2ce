"""``memcached://host:port``: TTL locks on one memcached 1.6 server (docs/memcached.md)."""

from __future__ import annotations

import socket
import time
import urllib.parse

from conch.backends.base import Backend, GroupStore, LockHandle, LossCallback
from conch.backends.memcached import shared
from conch.backends.memcached.client import (
    CAS_TRIES,
    KEY_PREFIX,
    MemcachedClient,
    MemcachedSession,
    lock_keys,
)
from conch.backends.memcached.groups import MemcachedGroupStore
from conch.capabilities import Capabilities
from conch.introspection import (
    HolderChanged,
    HolderInfo,
    LockInfo,
    has_hold_to_break,
    read_stamp,
)
from conch.url import BackendURL

HOLDER_KEY_LENGTH = len(KEY_PREFIX) + 64  # the prefix, then 64 hex digits
DUMP_TRIES = 20  # a crawl already running makes memcached answer BUSY for a moment


class MemcachedBackend(Backend):
    """Locks as keys with an expiry on one memcached server."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=False, notify=False, shared_locks=True,
        distributed=True, introspection=True, breakable=True, groups=True, semaphores=True)

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        self.session = MemcachedSession(url)

    def connect(self) -> None:
        self.session.connect()

    def close(self) -> None:
        self.session.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return shared.MemcachedWriter(self.session, key, self.member_id, on_lost)

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return shared.MemcachedReader(self.session, key, self.member_id, on_lost)

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        return shared.MemcachedPermit(self.session, key, self.member_id, limit, on_lost)

    def groups(self) -> GroupStore:
        return MemcachedGroupStore(self.session, self.member_id)

    def describe_lock(self, key: bytes) -> LockInfo:
        return self.session.call(lambda client, _: _describe(client, key)[0])

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return self.session.call(lambda client, _: _held_locks(client))

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        """Compare-and-delete the holder key on the CAS id just read: only the hold seen."""
        def break_hold(client: MemcachedClient, retried: bool) -> LockInfo:
            first, wanted = None, token
            for _ in range(CAS_TRIES):
                lock, cas = _describe(client, key)
                if not has_hold_to_break(lock, wanted) or lock.holder is None or cas is None:
                    if first is None:
                        return lock  # free: nothing to break
                    raise HolderChanged(f"lock {lock.name!r} is no longer held")
                first, wanted = first or lock, lock.holder.token  # now break the hold seen
                reply = client.compare_and_delete(lock_keys(key).holder, cas)
                if reply == b"HD":
                    return first
                if reply != b"EX":  # EX: changed since the read (renewed, most likely): again
                    break  # NF: released or expired meanwhile
            raise HolderChanged(f"lock {key.decode('utf-8', 'backslashreplace')!r} changed "
                                "while it was being broken")
        return self.session.call(break_hold)


def _describe(client: MemcachedClient, name: bytes) -> tuple[LockInfo, bytes | None]:
    """Lock ``name`` and the CAS id of its holder key (None: free)."""
    value, cas = client.gets(lock_keys(name).holder)
    return LockInfo(name, None if value is None else _holder(client, name, value)), cas


def _held_locks(client: MemcachedClient) -> list[LockInfo]:
    """Every lock held whose holder left a stamp naming its key, from the cache's listing."""
    keys = (urllib.parse.unquote_to_bytes(line.split(b" ", 1)[0][4:])
            for line in _metadump(client).splitlines() if line.startswith(b"key="))
    values = client.get_many([key for key in keys
                              if key.startswith(KEY_PREFIX) and len(key) == HOLDER_KEY_LENGTH])
    stamped = [(stamp, value) for value in values.values()
               if (stamp := read_stamp(value.partition(b" ")[2])) is not None]
    return [LockInfo(stamp.key, _holder(client, stamp.key, value)) for stamp, value in stamped
            if lock_keys(stamp.key).holder in values]


def _metadump(client: MemcachedClient) -> bytes:
    """The cache's listing, on a connection of its own (docs/memcached.md, "Introspection")."""
    for _ in range(DUMP_TRIES):
        sock = socket.create_connection(client.server, timeout=client.timeout)
        if client.tls_context:  # closes the socket if the handshake fails
            sock = client.tls_context.wrap_socket(sock, server_hostname=client.server[0])
        with sock:
            sock.sendall(b"lru_crawler metadump all\r\n")
            dump = b""
            while not dump.endswith(b"END\r\n") and not dump.startswith((b"BUSY", b"ERROR")):
                if not (chunk := sock.recv(65536)):
                    break
                dump += chunk
        if not dump.startswith(b"BUSY"):
            return dump
        time.sleep(0.05)
    raise OSError(f"memcached's LRU crawler stayed busy: {dump[:80]!r}")


def _holder(client: MemcachedClient, name: bytes, value: bytes) -> HolderInfo:
    keys = lock_keys(name)
    counter = client.get(keys.counter)
    token = int(counter) if counter and counter.isdigit() else None
    reply: bytes = client.raw_command(b"mg " + keys.holder + b" t")  # HD t<seconds left> | EN
    ttl = next((int(flag[1:]) for flag in reply.split()[1:] if flag.startswith(b"t")), -1)
    ttl_left = float(ttl) if ttl >= 0 else None  # -1: no expiry
    stamp = read_stamp(value.partition(b" ")[2])  # None: from before stamps, or by hand
    return (HolderInfo if stamp is None else stamp.holder)(token=token, ttl_left=ttl_left)
