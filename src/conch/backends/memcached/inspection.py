"""Who holds the ``memcached://`` locks (``conch show``, ``conch ls``), and breaking a
hold with a compare-and-delete on the CAS id just read (docs/memcached.md, "Introspection")."""

from __future__ import annotations

import socket
import ssl
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
from conch.introspection import HolderChanged, HolderInfo, LockInfo, read_stamp

# A holder key: the prefix and 64 hex digits (the counter key adds ":token").
_HOLDER_KEY_LENGTH = len(KEY_PREFIX) + 64
_DUMP_TRIES = 20  # a crawl already running makes memcached answer BUSY for a moment


def describe(client: Client, keys: LockKeys, name: bytes) -> tuple[LockInfo, bytes | None]:
    """Lock ``name`` and the CAS id of its holder key (None: free)."""
    value, cas = client.gets(keys.holder)
    if value is None:
        return LockInfo(name, None), None
    return LockInfo(name, _holder(client, keys, value)), cas


def held_locks(client: Client) -> list[LockInfo]:
    """Every lock held on the server (whose holder left a stamp)."""
    dump = _metadump(client)
    holder_keys = []
    for line in dump.splitlines():
        if not line.startswith(b"key="):
            continue
        key = urllib.parse.unquote_to_bytes(line.split(b" ", 1)[0][4:])
        if key.startswith(KEY_PREFIX) and len(key) == _HOLDER_KEY_LENGTH:
            holder_keys.append(key)
    found = []
    values = client.get_many(holder_keys) if holder_keys else {}
    for value in values.values():
        stamp = read_stamp(_stamp_part(value))
        if stamp is None:
            continue
        keys = lock_keys(stamp.key)
        if keys.holder in values:  # a stamp that names the key it is in
            found.append(LockInfo(stamp.key, _holder(client, keys, value)))
    return found


def _metadump(client: Client) -> bytes:
    """The ``lru_crawler metadump all`` listing, on a connection of its own.

    Not ``Client.raw_command``: pymemcache 4.0 keeps only the last chunk of a reply
    longer than one read, which loses most keys of a large cache.
    """
    for _ in range(_DUMP_TRIES):
        with _connection(client) as sock:
            sock.sendall(b"lru_crawler metadump all\r\n")
            dump = b""
            while not (dump.endswith(b"END\r\n") or dump.startswith(b"BUSY")
                       or dump.startswith(b"ERROR")):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                dump += chunk
        if not dump.startswith(b"BUSY"):
            return dump
        time.sleep(0.05)
    raise OSError(f"memcached's LRU crawler stayed busy: {dump[:80]!r}")


def _connection(client: Client) -> socket.socket:
    """A connection to ``client``'s server, with the same TLS."""
    host, port = client.server
    sock = socket.create_connection((host, port), timeout=client.timeout or 5.0)
    context: ssl.SSLContext | None = client.tls_context
    if context is None:
        return sock
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def break_hold(client: Client, keys: LockKeys, name: bytes, token: int | None) -> LockInfo:
    """Delete the hold of lock ``name`` (only the one with ``token``, if given)."""
    first: LockInfo | None = None
    for _ in range(CAS_TRIES):
        lock, cas = describe(client, keys, name)
        if lock.holder is None or cas is None:
            if token is None and first is None:
                return lock  # free: nothing to break
            raise HolderChanged(f"lock {lock.name!r} is no longer held")
        if token is not None and lock.holder.token != token:
            raise HolderChanged(f"lock {lock.name!r} is now held by token "
                                f"{lock.holder.token}, not {token}")
        first = first or lock
        token = lock.holder.token  # from now on, break the hold we saw, or none
        reply = compare_and_delete(client, keys.holder, cas)
        if reply == b"HD":
            return first
        if reply != b"EX":  # NF: released or expired meanwhile
            break
        # EX: the key changed since the read, most likely renewed by its holder: again.
    raise HolderChanged(f"lock {name.decode('utf-8', 'backslashreplace')!r} changed while "
                        "it was being broken")


def _holder(client: Client, keys: LockKeys, value: bytes) -> HolderInfo:
    counter = client.get(keys.counter)
    token = int(counter) if counter and counter.isdigit() else None
    reply: bytes = client.raw_command(b"mg " + keys.holder + b" t")
    flags = reply.split()[1:] if reply.startswith(b"HD") else []
    ttl = next((int(flag[1:]) for flag in flags if flag.startswith(b"t")), -1)
    ttl_left = float(ttl) if ttl >= 0 else None
    stamp = read_stamp(_stamp_part(value))
    if stamp is None:  # a value from before stamps, or written by hand
        return HolderInfo(token=token, ttl_left=ttl_left)
    return stamp.holder(token=token, ttl_left=ttl_left)


def _stamp_part(value: bytes) -> bytes:
    return value.partition(b" ")[2]
