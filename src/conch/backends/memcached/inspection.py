"""Who holds the ``memcached://`` locks (``conch show``, ``conch ls``: the cache listed by
``lru_crawler metadump``), and breaking a hold by compare-and-delete (docs/memcached.md)."""

from __future__ import annotations

import socket
import time
import urllib.parse

from pymemcache.client.base import Client  # type: ignore[import-untyped]

from conch.backends.memcached.client import (
    CAS_TRIES,
    KEY_PREFIX,
    LockKeys,
    compare_and_delete,
    lock_keys,
)
from conch.introspection import HolderChanged, HolderInfo, LockInfo, has_hold_to_break, read_stamp

_HOLDER_KEY_LENGTH = len(KEY_PREFIX) + 64  # the prefix, then 64 hex digits
_DUMP_TRIES = 20  # a crawl already running makes memcached answer BUSY for a moment


def describe(client: Client, keys: LockKeys, name: bytes) -> tuple[LockInfo, bytes | None]:
    """Lock ``name`` and the CAS id of its holder key (None: free)."""
    value, cas = client.gets(keys.holder)
    return LockInfo(name, None if value is None else _holder(client, keys, value)), cas


def held_locks(client: Client) -> list[LockInfo]:
    """Every lock held on the server (whose holder left a stamp naming the key it is in)."""
    values = client.get_many(_holder_keys(_metadump(client)))
    locks = []
    for value in values.values():
        stamp = read_stamp(_stamp_part(value))
        if stamp is not None and (keys := lock_keys(stamp.key)).holder in values:
            locks.append(LockInfo(stamp.key, _holder(client, keys, value)))
    return locks


def _holder_keys(dump: bytes) -> list[bytes]:
    """The holder keys in a metadump (lines ``key=<URL-encoded key> exp=...``)."""
    keys = (urllib.parse.unquote_to_bytes(line.split(b" ", 1)[0][4:])
            for line in dump.splitlines() if line.startswith(b"key="))
    return [key for key in keys if key.startswith(KEY_PREFIX) and len(key) == _HOLDER_KEY_LENGTH]


def _metadump(client: Client) -> bytes:
    """The cache's listing, on a connection of its own: pymemcache 4.0's ``raw_command``
    keeps only the last chunk of a reply longer than one read."""
    for _ in range(_DUMP_TRIES):
        with _connection(client) as sock:
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


def _connection(client: Client) -> socket.socket:
    """A connection to ``client``'s server, with the same TLS."""
    sock = socket.create_connection(client.server, timeout=client.timeout)
    try:
        return client.tls_context.wrap_socket(sock, server_hostname=client.server[0]) \
            if client.tls_context else sock
    except BaseException:
        sock.close()
        raise


def break_hold(client: Client, keys: LockKeys, name: bytes, token: int | None) -> LockInfo:
    """Delete the hold of lock ``name`` (only the one with ``token``, if given)."""
    first: LockInfo | None = None
    for _ in range(CAS_TRIES):
        lock, cas = describe(client, keys, name)
        if not has_hold_to_break(lock, token) or lock.holder is None or cas is None:
            if first is None:
                return lock  # free: nothing to break
            raise HolderChanged(f"lock {lock.name!r} is no longer held")
        first, token = first or lock, lock.holder.token  # now break the hold seen, or none
        reply = compare_and_delete(client, keys.holder, cas)
        if reply != b"EX":  # EX: changed since the read (renewed, most likely): again
            if reply == b"HD":
                return first
            break  # NF: released or expired meanwhile
    raise HolderChanged(f"lock {name.decode('utf-8', 'backslashreplace')!r} changed while "
                        "it was being broken")


def _holder(client: Client, keys: LockKeys, value: bytes) -> HolderInfo:
    counter = client.get(keys.counter)
    token = int(counter) if counter and counter.isdigit() else None
    reply: bytes = client.raw_command(b"mg " + keys.holder + b" t")  # HD t<seconds left> | EN
    ttl = next((int(flag[1:]) for flag in reply.split()[1:] if flag.startswith(b"t")), -1)
    ttl_left = float(ttl) if ttl >= 0 else None  # -1: no expiry
    stamp = read_stamp(_stamp_part(value))
    if stamp is None:  # a value from before stamps, or written by hand
        return HolderInfo(token=token, ttl_left=ttl_left)
    return stamp.holder(token=token, ttl_left=ttl_left)


def _stamp_part(value: bytes) -> bytes:
    return value.partition(b" ")[2]
