"""A ``memcached://`` coordinator's URL options, keys, client (pymemcache's, with two meta
commands) and session (docs/memcached.md, "How it works")."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import ssl
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from pymemcache.client.base import Client, PooledClient  # type: ignore[import-untyped]
from pymemcache.exceptions import (  # type: ignore[import-untyped]
    MemcacheError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
)

from conch.backends.kit.errors import translated, unavailable
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.naming import hex_digest
from conch.backends.kit.tls import SSL_URL_OPTIONS, TLSFiles, client_context, from_ssl_options
from conch.backends.kit.tls_diagnosis import diagnose_endpoints, explain
from conch.backends.kit.ttl import TtlHold, TtlSession
from conch.errors import InvalidURL
from conch.url import BackendURL

KEY_PREFIX = b"conch:"
MAX_TTL = 30 * 24 * 3600  # memcached reads a longer expiry as a Unix time
TRANSIENT = (OSError, MemcacheUnexpectedCloseError)  # a fresh connection may succeed
CLIENT_ERRORS = (*TRANSIENT, MemcacheError)
SHARED = b"=shared "  # how a shared holder key's value starts (an exclusive one: hex)
CAS_TRIES = 3  # reads and retries of a cas or compare-and-delete beaten by another change


@dataclasses.dataclass(frozen=True)
class MemcachedOptions:
    """What a ``memcached://`` URL asks for (see ``docs/memcached.md``)."""

    host: str
    port: int
    ttl: int  # whole seconds: memcached's clock ticks once a second
    connect_timeout: float
    timeout: float
    tls: TLSFiles | None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: BackendURL) -> MemcachedOptions:
        """Check ``url`` (raise :class:`InvalidURL`, never showing a password)."""
        url.options({"ttl", "connect_timeout", "timeout", *SSL_URL_OPTIONS})
        if url.username is not None or url.password is not None:
            raise InvalidURL(f"memcached:// URLs take no credentials (the text protocol has "
                             f"none): {url}")
        if len(url.hosts) != 1 or not url.hosts[0][0]:
            raise InvalidURL(f"memcached:// URLs name exactly one server, as "
                             f"memcached://host:port (servers do not share keys): {url}")
        if url.path not in ("", "/"):
            raise InvalidURL(f"memcached:// URLs take no path: {url}")
        ttl = url.float_option("ttl", 10.0)
        if not ttl.is_integer() or not 2 <= ttl <= MAX_TTL:
            raise InvalidURL(f"option ttl must be whole seconds from 2 to {MAX_TTL} (memcached "
                             f"expires keys on a one-second clock), got {url.query['ttl']!r}")
        host, port = url.hosts[0]
        return cls(host, port or 11211, int(ttl), url.float_option("connect_timeout", 2.0),
                   url.float_option("timeout", 2.0), from_ssl_options(url))

    def describe(self, exc: BaseException, *, first: bool = False,
                 tls_context: ssl.SSLContext | None = None) -> str:
        """An error's text for users (a close at the ``first`` request: TLS is diagnosed)."""
        why = explain(exc)
        if why is None and first and isinstance(
                exc, (MemcacheUnexpectedCloseError, ConnectionResetError, ssl.SSLEOFError)):
            why = diagnose_endpoints([(self.host, self.port)], tls_context,
                                     self.connect_timeout, "add ssl=true")
        if why is None and isinstance(exc, TimeoutError):
            hint = " (no answer to the TLS handshake: does the port speak TLS?)" \
                if self.tls and not isinstance(exc, ssl.SSLError) else ""
            why = f"no reply within {self.timeout} s (connect: {self.connect_timeout} s){hint}"
        return f"memcached at {self.where}: {why or f'{type(exc).__name__}: {exc}'}"


class LockKeys(NamedTuple):
    """The memcached keys of one lock name."""

    holder: bytes
    counter: bytes


def lock_keys(name: bytes, kind: bytes = b"") -> LockKeys:
    """``conch:<kind><sha256 hex>`` (kind ``semaphore:``: a roster) and its ``:token`` counter."""
    holder = KEY_PREFIX + kind + hex_digest(name).encode()
    return LockKeys(holder, holder + b":token")


def member_key(key: bytes, member: str) -> bytes:
    """``<key>:<id>``: the key with the TTL that keeps member ``id`` of ``key`` alive."""
    return key + b":" + member.encode()


class MemcachedClient(Client):  # type: ignore[misc]
    """pymemcache's client of one connection, with conch's steps and two meta commands."""

    def add_with_cas(self, key: bytes, value: bytes, ttl: int) -> bytes | None:
        """``add`` returning the new item's CAS id (None: not stored)."""
        reply: bytes = self.raw_command(b"ms %b %d T%d ME c\r\n%b" % (key, len(value), ttl, value))
        return reply[4:] if reply.startswith(b"HD c") else None

    def compare_and_delete(self, key: bytes, cas: bytes) -> bytes:
        """``md <key> C<cas>``: ``HD`` deleted, ``EX`` the CAS id changed, ``NF`` no such key."""
        reply: bytes = self.raw_command(b"md " + key + b" C" + cas)
        return reply

    def store(self, key: bytes, value: bytes, cas: bytes | None, ttl: int) -> bool:
        """Write ``key`` unless it changed since read: ``add`` if it was absent (``cas`` None)."""
        return bool(self.add(key, value, expire=ttl) if cas is None
                    else self.cas(key, value, cas, expire=ttl))

    def free(self, key: bytes, value: bytes, cas: bytes | None = None) -> bool:
        """Delete ``key`` if it holds ``value`` (``cas``: its CAS id, if known); whether it did."""
        if cas is not None and (reply := self.compare_and_delete(key, cas)) != b"EX":
            return reply == b"HD"
        for _ in range(CAS_TRIES):
            found, cas = self.gets(key)
            if found != value:
                return False
            if (reply := self.compare_and_delete(key, cas)) != b"EX":
                return reply == b"HD"
        return False

    def alive_members(self, key: bytes, members: list[str]) -> set[str]:
        """Those of ``members`` of ``key`` whose own key still lives (one ``get_many``)."""
        found = self.get_many([member_key(key, member) for member in members])
        return {member for member in members if member_key(key, member) in found}


class PooledMemcachedClient(PooledClient):  # type: ignore[misc]
    """pymemcache's thread-safe pool of :class:`MemcachedClient` connections."""

    client_class = MemcachedClient


class Sharing(NamedTuple):
    """A shared holder key's value: the ids of the shared holders and waiting writers."""

    readers: list[str]
    writers: list[str]

    @classmethod
    def read(cls, value: bytes | None) -> Sharing | None:  # None: absent or exclusive
        state = json.loads(value[len(SHARED):]) if value and value.startswith(SHARED) else None
        return None if state is None else cls(list(state["readers"]), list(state["writers"]))

    def encode(self) -> bytes:
        return SHARED + json.dumps({"readers": sorted(set(self.readers)),
                                    "writers": sorted(set(self.writers))}).encode()

    def alive(self, client: MemcachedClient, holder: bytes) -> Sharing:  # those whose key lives
        alive = client.alive_members(holder, [*self.readers, *self.writers])
        return Sharing([r for r in self.readers if r in alive],
                       [w for w in self.writers if w in alive])


def keeps(current: bytes, value: bytes) -> bool:
    """Whether a key still holds a hold's ``value``: equal, or a sharing listing it as reader."""
    sharing = Sharing.read(current)
    return current == value if sharing is None else \
        value.decode("utf-8", "replace") in sharing.readers


T = TypeVar("T")
C = TypeVar("C", MemcachedClient, PooledMemcachedClient)


class MemcachedSession:
    """The pooled client (:attr:`client`, once connected) and the holds' renewal."""

    client: PooledMemcachedClient
    _renewer: MemcachedClient

    def __init__(self, url: BackendURL) -> None:
        self.url = url
        self.options = MemcachedOptions.from_url(url)
        self.ttl = self._new_ttl()
        self.closed = False
        self.translated = functools.partial(translated, url, CLIENT_ERRORS, self.options.describe)
        self._tls_context: ssl.SSLContext | None = None
        forget_in_child(self)

    def connect(self) -> None:
        """Check that the server speaks the meta protocol (memcached 1.6+), start renewing."""
        options, where = self.options, f"memcached at {self.options.where}"
        if options.tls is not None:
            self._tls_context = client_context(options.tls, where)
        self.client = self._connect(PooledMemcachedClient)
        try:
            self.client.version()  # long enough for a TLS port to refuse it at once
            reply = self.client.raw_command(b"mn")  # the meta no-op
        except MemcacheUnknownCommandError:
            reply = b"ERROR"
        except CLIENT_ERRORS as exc:
            raise unavailable(self.url, self.options.describe(
                exc, first=True, tls_context=self._tls_context)) from None
        if reply != b"MN":
            raise unavailable(self.url, f"{where} does not speak the meta protocol (mn "
                              f"answered {reply[:40]!r}): conch needs memcached 1.6 or later")
        self._renewer = self._connect(MemcachedClient, self.ttl.interval)
        self.ttl.start()

    def close(self) -> None:
        """Stop renewing (each hold is reported lost) and close the connections."""
        self.closed = True
        self.ttl.stop()
        self._renewer.close()
        self.client.close()

    def forget_parent(self) -> None:
        """In a forked child: connections and renewals of its own."""
        self.client = self._connect(PooledMemcachedClient)
        if hasattr(self, "_renewer") and not self.closed:
            self.ttl = self._new_ttl()
            self._renewer = self._connect(MemcachedClient, self.ttl.interval)
            self.ttl.start()

    def _new_ttl(self) -> TtlSession[bytes]:
        # A key set with expiry ttl surely lives ttl - 1 s (memcached's clock ticks in s).
        return TtlSession("memcached", self.options.ttl - 1, self._renew, self.options.describe,
                          CLIENT_ERRORS)

    def _connect(self, kind: type[C], timeout: float | None = None) -> C:
        options = self.options
        return kind((options.host, options.port), connect_timeout=options.connect_timeout,
                    timeout=min(timeout or options.timeout, options.timeout),
                    tls_context=self._tls_context,
                    no_delay=True,  # requests are tiny: do not let Nagle hold them back
                    default_noreply=False)  # every store must say whether it stored

    def check_open(self) -> None:
        if self.closed:
            raise unavailable(self.url, f"memcached at {self.options.where}: the coordinator "
                              "was stopped")

    def call(self, step: Callable[[MemcachedClient, bool], T]) -> T:
        self.check_open()
        with self.translated():
            return self.run(step)

    def run(self, step: Callable[[MemcachedClient, bool], T]) -> T:
        """``step(client, retried)``, again on a fresh connection after a connection failure."""
        try:  # one pooled connection for the whole step: one checkout, not one per call
            with self.client.client_pool.get_and_release(destroy_on_fail=True) as client:
                return step(client, False)
        except TRANSIENT:
            with contextlib.closing(self._connect(MemcachedClient)) as client:
                return step(client, True)

    def _renew(self, holds: list[TtlHold[bytes]], within: float) -> list[bool]:
        # within: the renewer's timeout is one interval at most already.
        found = self._renewer.gets_many([hold.keys for hold in holds])
        return [self._extend(hold.keys, hold.value, found.get(hold.keys, (None, None)))
                for hold in holds]

    def _extend(self, key: bytes, value: bytes, found: tuple[bytes | None, bytes | None]) -> bool:
        """Reset ``key``'s expiry if it still keeps ``value`` (``found``: with its CAS id)."""
        current, cas = found
        for _ in range(CAS_TRIES):
            if current is None or not keeps(current, value):
                return False
            # cas, not touch: touch would extend a key another holder set since the read.
            if self._renewer.cas(key, current, cas, expire=self.options.ttl):
                return True
            current, cas = self._renewer.gets(key)
        return current is not None and keeps(current, value)
