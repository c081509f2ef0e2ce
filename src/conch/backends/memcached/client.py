"""The ``memcached://`` backend's connection: URL options, keys, a pool, the calls pymemcache lacks.

pymemcache 4 speaks only the classic text protocol, whose ``delete`` takes no
CAS id: a release built on it must read, then delete, and may delete a lock
another process took in between (tooz's driver says so in a comment).
memcached 1.6's meta protocol has the missing call, ``md <key> C<cas>``, a
compare-and-delete; :func:`compare_and_delete` sends it through pymemcache's
``raw_command`` (its reply is one line: ``HD`` deleted, ``EX`` the CAS id
changed, ``NF`` no such key). :meth:`ConnectionPool.check_server` refuses a
server without the meta protocol at connect time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

from pymemcache.client.base import Client  # type: ignore[import-untyped]
from pymemcache.exceptions import (  # type: ignore[import-untyped]
    MemcacheError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
)

from conch.backends.kit.tls import SSL_URL_OPTIONS, TLSFiles, client_context, from_ssl_options
from conch.backends.kit.tls_diagnosis import diagnose_endpoints, explain
from conch.errors import BackendUnavailable, InvalidURL
from conch.url import BackendURL

DEFAULT_PORT = 11211
OPTIONS = frozenset({"ttl", "connect_timeout", "timeout", *SSL_URL_OPTIONS})
KEY_PREFIX = b"conch:"
# memcached reads a relative expiry above 30 days as a Unix time.
_MAX_RELATIVE_EXPIRY = 30 * 24 * 3600
TRANSIENT = (OSError, MemcacheUnexpectedCloseError)
"""Failures of the connection, not of the command: a fresh connection may succeed."""

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class MemcachedOptions:
    """What a ``memcached://`` URL asks for (see ``docs/memcached.md``)."""

    host: str
    port: int
    ttl: int
    """Expiry of a lock key, whole seconds (memcached's expiry has a one-second clock)."""
    connect_timeout: float
    timeout: float
    tls: TLSFiles | None = None
    """TLS to the server (``memcached -Z``), from the ``ssl_*`` options."""

    @property
    def lease(self) -> float:
        """Seconds a key set with expiry ``ttl`` surely lives: memcached's clock ticks once
        a second, so an expiry of ``ttl`` ends between ``ttl - 1`` and ``ttl`` s later."""
        return float(self.ttl - 1)

    @property
    def where(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: BackendURL) -> MemcachedOptions:
        """Check ``url`` (raise :class:`InvalidURL`, never showing a password)."""
        url.options(OPTIONS)
        if url.username is not None or url.password is not None:
            raise InvalidURL(f"memcached:// URLs take no credentials (the text protocol has "
                             f"none): {url}")
        if len(url.hosts) != 1 or not url.hosts[0][0]:
            raise InvalidURL(f"memcached:// URLs name exactly one server, as "
                             f"memcached://host:port (servers do not share keys): {url}")
        if url.path not in ("", "/"):
            raise InvalidURL(f"memcached:// URLs take no path: {url}")
        ttl = url.float_option("ttl", 10.0)
        if not ttl.is_integer() or not 2 <= ttl <= _MAX_RELATIVE_EXPIRY:
            raise InvalidURL(f"option ttl must be whole seconds from 2 to {_MAX_RELATIVE_EXPIRY} "
                             f"(memcached expires keys on a one-second clock), got "
                             f"{url.query['ttl']!r}")
        host, port = url.hosts[0]
        return cls(
            host=host,
            port=port or DEFAULT_PORT,
            ttl=int(ttl),
            connect_timeout=url.float_option("connect_timeout", 2.0),
            timeout=url.float_option("timeout", 2.0),
            tls=from_ssl_options(url),
        )


class LockKeys(NamedTuple):
    """The memcached keys of one lock name."""

    holder: bytes
    counter: bytes


def lock_keys(name: bytes) -> LockKeys:
    """``conch:<sha256 hex>``: keys are at most 250 bytes without spaces or control
    characters, so any name maps to a short, distinct, printable key."""
    base = KEY_PREFIX + hashlib.sha256(name).hexdigest().encode()
    return LockKeys(base, base + b":token")


def compare_and_delete(client: Client, key: bytes, cas: bytes) -> bytes:
    """Delete ``key`` only if its CAS id is still ``cas``: ``HD``, ``EX`` or ``NF``."""
    reply: bytes = client.raw_command(b"md " + key + b" C" + cas)
    return reply


class ConnectionPool:
    """pymemcache clients (one connection each) for the threads of one coordinator."""

    def __init__(self, options: MemcachedOptions) -> None:
        self.options = options
        self._tls_context: ssl.SSLContext | None = None  # read by check_server()
        self._mutex = threading.Lock()
        self._idle: list[Client] = []
        self._closed = False

    def new_client(self, timeout: float | None = None) -> Client:
        """A client of its own (not pooled); its calls wait ``timeout`` (default: the option)."""
        options = self.options
        return Client(
            (options.host, options.port),
            connect_timeout=options.connect_timeout,
            timeout=options.timeout if timeout is None else timeout,
            no_delay=True,  # requests are tiny: do not let Nagle hold them back
            default_noreply=False,  # every store must say whether it stored
            tls_context=self._tls_context,
        )

    @contextlib.contextmanager
    def client(self) -> Iterator[Client]:
        """A client for the block. A connection failure closes every idle one too: they
        all broke together when the server restarted."""
        with self._mutex:
            if self._closed:
                raise BackendUnavailable(f"memcached at {self.options.where}: the coordinator "
                                         f"was stopped")
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self.new_client()
        try:
            yield client
        except BaseException as exc:
            client.close()  # a reply may still be on its way: never reuse this connection
            if isinstance(exc, TRANSIENT):
                self._close_idle()
            raise
        with self._mutex:
            if not self._closed:
                self._idle.append(client)
                return
        client.close()

    def run(self, step: Callable[[Client, bool], T]) -> T:
        """``step(client, retried)``, once more on a fresh connection after a connection
        failure (a stale connection after a server restart): only for idempotent steps.
        ``retried`` tells the step that an earlier try may have done its work."""
        try:
            with self.client() as client:
                return step(client, False)
        except TRANSIENT:
            with self.client() as client:
                return step(client, True)

    def check_server(self) -> None:
        """Raise :class:`BackendUnavailable` unless the server answers and speaks the meta
        protocol (memcached 1.6 and later), which the release needs. Reads the TLS files
        first (clients made before have no TLS)."""
        if self.options.tls is not None:
            self._tls_context = client_context(self.options.tls,
                                               f"memcached at {self.options.where}")
        try:
            with self.client() as client:
                client.version()
                reply = client.raw_command(b"mn")  # meta no-op
        except MemcacheUnknownCommandError:
            reply = b"ERROR"
        except (*TRANSIENT, MemcacheError) as exc:
            raise BackendUnavailable(self._diagnosed(exc)) from None
        if reply != b"MN":
            raise BackendUnavailable(
                f"memcached at {self.options.where} does not speak the meta protocol "
                f"(mn answered {reply[:40]!r}): conch needs memcached 1.6 or later"
            )

    def describe(self, exc: BaseException) -> str:
        """An error's text for users: where, what failed (no credentials: URLs have none)."""
        tls_problem = explain(exc)
        if tls_problem is not None:
            why = tls_problem
        elif isinstance(exc, TimeoutError):
            hint = " (no answer to the TLS handshake: does the port speak TLS?)" \
                if self.options.tls and not isinstance(exc, ssl.SSLError) else ""
            why = f"no reply within {self.options.timeout} s (connect: " \
                  f"{self.options.connect_timeout} s){hint}"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return f"memcached at {self.options.where}: {why}"

    def _diagnosed(self, exc: BaseException) -> str:
        """:meth:`describe` of a failed first request; a closed connection, which may be a
        TLS problem the client could not see, diagnosed
        (:mod:`conch.backends.kit.tls_diagnosis`)."""
        closed = (MemcacheUnexpectedCloseError, ConnectionResetError, ssl.SSLEOFError)
        if isinstance(exc, closed):
            options = self.options
            problem = diagnose_endpoints([(options.host, options.port)], self._tls_context,
                                         options.connect_timeout, "add ssl=true")
            if problem is not None:
                return f"memcached at {options.where}: {problem}"
        return self.describe(exc)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Close every connection; later calls raise :class:`BackendUnavailable`."""
        with self._mutex:
            self._closed = True
        self._close_idle()

    def _close_idle(self) -> None:
        with self._mutex:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()
