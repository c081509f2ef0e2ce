"""The ``redis://`` backend's connection: URL options, the pool, timed round-trips, error text.

Every call goes through :meth:`RedisClient.roundtrip`, which writes a batch of
commands at once and reads their replies with a timeout chosen per call: a
renewal must not wait longer than its holds stay valid, and a ``BLPOP`` reply
may take as long as the ``BLPOP`` itself. redis-py's own retry loop is off
(its default retries ten times with back-off): this backend decides which
steps are safe to repeat.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio.sentinel
import redis.sentinel
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry

from conch.backends.kit.tls import OptionNames, TLSFiles, client_context, tls_from_url
from conch.backends.kit.tls_diagnosis import diagnose_endpoints
from conch.backends.redis.errors import closed_on_us, describe
from conch.backends.redis.scripts import ALL as ALL_SCRIPTS
from conch.errors import InvalidURL
from conch.url import BackendURL

log = logging.getLogger("conch")

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
# redis-py's names (tooz's too), for the master and, with sentinel_ssl, the sentinels.
TLS_OPTIONS = OptionNames(ca="ssl_ca_certs", cert="ssl_certfile", key="ssl_keyfile",
                          key_password="ssl_password", verify_mode="ssl_cert_reqs")
_SENTINEL_OPTIONS = ("sentinel_fallback", "sentinel_username", "sentinel_password",
                     "sentinel_ssl")
OPTIONS = frozenset({"ttl", "connect_timeout", "socket_timeout", "wait_replicas", "sentinel",
                     *_SENTINEL_OPTIONS, *TLS_OPTIONS})

Command = tuple[object, ...]


@dataclasses.dataclass(frozen=True)
class RedisOptions:
    """What a ``redis://`` URL asks for (see ``docs/redis.md`` for each option)."""

    ttl: float
    connect_timeout: float
    socket_timeout: float
    wait_replicas: int
    sentinel: str | None
    sentinel_tls: bool
    """Whether the connections to the sentinels use TLS (``?sentinel_ssl=true``)."""
    tls: TLSFiles | None
    """The TLS files of the URL, when a connection uses TLS (checked at connect)."""
    where: str
    """Where the server is, for messages: ``host:port`` list (and sentinel master name)."""

    @classmethod
    def from_url(cls, url: BackendURL) -> RedisOptions:
        """Check ``url``'s options (raise :class:`InvalidURL`)."""
        query = url.options(OPTIONS)
        sentinel = query.get("sentinel") or None
        if len(url.hosts) > 1 and sentinel is None:
            raise InvalidURL(f"several hosts are sentinels: add ?sentinel=MASTER_NAME: {url}")
        for name in _SENTINEL_OPTIONS:
            if name in query and sentinel is None:
                raise InvalidURL(f"{name} needs ?sentinel=MASTER_NAME: {url}")
        sentinel_tls = url.bool_option("sentinel_ssl", False)
        tls = tls_from_url(url, TLS_OPTIONS, url.scheme == "rediss" or sentinel_tls,
                           "a rediss:// URL (TLS to the master) or ?sentinel_ssl=true "
                           "(TLS to the sentinels)")
        _database(url)
        hosts = ",".join(f"{host}:{port}" for host, port in _hosts(url, query))
        return cls(
            ttl=url.float_option("ttl", 10.0),
            connect_timeout=url.float_option("connect_timeout", 2.0),
            socket_timeout=url.float_option("socket_timeout", 2.0),
            wait_replicas=_count(query.get("wait_replicas", "0"), "wait_replicas"),
            sentinel=sentinel,
            sentinel_tls=sentinel_tls,
            tls=tls,
            where=f"{hosts} (sentinels of {sentinel!r})" if sentinel else hosts,
        )

    @property
    def ttl_ms(self) -> int:
        """The TTL in whole milliseconds (at least 1), as the scripts take it."""
        return max(1, round(self.ttl * 1000))


@dataclasses.dataclass(frozen=True)
class PoolSettings:
    """How to reach the master a URL names: what the blocking and the asyncio pools
    are both made from (each adds its own connection classes and retry policy)."""

    hosts: list[tuple[str, int]]
    """The Redis host, or the sentinels."""
    connection: dict[str, Any]
    """Keyword arguments of every connection to the master."""
    sentinel: dict[str, Any]
    """Keyword arguments of the connections to the sentinels."""
    tls: bool

    @classmethod
    def from_url(cls, url: BackendURL, options: RedisOptions) -> PoolSettings:
        """The settings of ``url`` (checked by :meth:`RedisOptions.from_url`)."""
        query = url.query
        connection: dict[str, Any] = {
            "db": _database(url),
            "username": url.username or None,
            "password": url.password,
            "socket_connect_timeout": options.connect_timeout,
            "socket_timeout": options.socket_timeout,
            "socket_keepalive": True,
            "client_name": "conch",
        }
        tls_files = {} if options.tls is None else _redis_py_tls(options.tls)
        if url.scheme == "rediss":
            connection.update(tls_files)
        # As tooz 9.1 and redis-py: the sentinels get neither the master's credentials nor
        # its TLS, only their own (sentinel_username, sentinel_password, sentinel_ssl).
        sentinel = {
            "socket_connect_timeout": options.connect_timeout,
            "socket_timeout": options.socket_timeout,
            "username": query.get("sentinel_username") or None,
            "password": query.get("sentinel_password") or None,
        }
        if options.sentinel_tls:
            sentinel.update(ssl=True, **tls_files)
        return cls(_hosts(url, query), connection, sentinel, url.scheme == "rediss")


class RedisClient:
    """A pool of connections to the Redis master ``url`` names (through Sentinel if asked)."""

    def __init__(self, url: BackendURL, options: RedisOptions) -> None:
        self._url = url
        self.options = options
        # redis-py reads the files at each connection: say now if one is unusable.
        self._tls_context = None if options.tls is None else \
            client_context(options.tls, f"redis at {options.where}")
        self._pool = _make_pool(url, options)
        self._closed = False
        self._busy: set[Any] = set()  # the connections of the round-trips in progress
        self._busy_mutex = threading.Lock()

    def roundtrip(self, commands: Sequence[Command], timeout: float | None = None) -> list[object]:
        """Send ``commands`` in one write and return their replies, in order.

        A command the server refused has its :class:`ResponseError` as reply. Waits at
        most ``timeout`` (default: the ``socket_timeout`` option) for each reply;
        raises :class:`RedisError` when the server cannot be reached or is too slow.
        """
        read_timeout = self.options.socket_timeout if timeout is None else timeout
        # redis-py's Connection is only partly annotated.
        connection: Any = self._pool.get_connection()
        with self._busy_mutex:
            self._busy.add(connection)
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            replies: list[object] = []
            for _ in commands:
                try:
                    replies.append(connection.read_response(timeout=read_timeout))
                except ResponseError as refused:
                    replies.append(refused)
        except BaseException:
            # A reply may still be on its way: never give this connection to anyone else.
            connection.disconnect()
            raise
        finally:
            with self._busy_mutex:
                self._busy.discard(connection)
            if self._closed:
                connection.disconnect()
            self._pool.release(connection)
        return replies

    def run(self, commands: Sequence[Command], timeout: float | None = None) -> list[object]:
        """:meth:`roundtrip`, loading the scripts first when the server lost them."""
        replies = self.roundtrip(commands, timeout)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # A restart or SCRIPT FLUSH emptied the script cache; EVALSHA ran nothing.
            self.load_scripts()
            replies = self.roundtrip(commands, timeout)
        return replies

    def load_scripts(self) -> None:
        """Put the backend's scripts in the server's cache (also checks it answers)."""
        for reply in self.roundtrip([script.load() for script in ALL_SCRIPTS]):
            if isinstance(reply, Exception):
                raise reply

    def close(self) -> None:
        """Close every connection. A round-trip in progress (a waiter's ``BLPOP``) fails at
        once: its socket is shut down here, and closed by the round-trip itself. Closed here,
        under eventlet it would not wake its reader: eventlet's hub forgets a descriptor
        closed by another green thread, leaving the reader asleep until its timeout."""
        self._closed = True
        with self._busy_mutex:
            busy = list(self._busy)
        for connection in busy:
            sock = getattr(connection, "_sock", None)  # redis-py has no public shutdown
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._pool.disconnect(inuse_connections=False)

    def describe(self, exc: BaseException) -> str:
        """``exc`` as a message for users: what failed where, never a credential."""
        return describe(self._url, self.options.where, self.options.sentinel, exc)

    def describe_start_failure(self, exc: BaseException) -> str:
        """:meth:`describe` of a failed first request; a connection closed on us, which may
        be a TLS problem redis-py could not see, diagnosed (:mod:`conch.backends.kit.tls_diagnosis`)
        at the master or the sentinels."""
        options = self.options
        if closed_on_us(exc):
            sentinels = options.sentinel is not None
            tls = options.sentinel_tls if sentinels else self._url.scheme == "rediss"
            problem = diagnose_endpoints(
                _hosts(self._url, self._url.query), self._tls_context if tls else None,
                options.connect_timeout, "add sentinel_ssl=true" if sentinels else "use rediss://")
            if problem is not None:
                return f"redis at {options.where}: {problem}"
        return self.describe(exc)


def _redis_py_tls(files: TLSFiles) -> dict[str, Any]:
    """redis-py's TLS arguments for ``files``."""
    return {"ssl_ca_certs": files.ca, "ssl_certfile": files.cert, "ssl_keyfile": files.key,
            "ssl_password": files.key_password, "ssl_cert_reqs": files.verify_mode}


def _make_pool(url: BackendURL, options: RedisOptions) -> redis.ConnectionPool:
    settings = PoolSettings.from_url(url, options)
    connection = {**settings.connection, "retry": Retry(redis.backoff.NoBackoff(), 0)}
    if options.sentinel is None:
        host, port = settings.hosts[0]
        if settings.tls:
            connection["connection_class"] = redis.SSLConnection
        return redis.ConnectionPool(host=host, port=port, **connection)
    manager = redis.sentinel.Sentinel(
        settings.hosts,
        sentinel_kwargs={**settings.sentinel, "retry": Retry(redis.backoff.NoBackoff(), 0)},
    )
    return redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
        options.sentinel, manager, ssl=settings.tls, **connection
    )


def _hosts(url: BackendURL, query: dict[str, str]) -> list[tuple[str, int]]:
    """The Redis host, or the sentinels (``sentinel_fallback`` adds a comma list, as tooz)."""
    port = DEFAULT_SENTINEL_PORT if query.get("sentinel") else DEFAULT_PORT
    hosts = [(host or "localhost", given or port) for host, given in url.hosts]
    for item in filter(None, query.get("sentinel_fallback", "").split(",")):
        host, _, given = item.rpartition(":")
        if not host or not given.isdigit() or not 0 < int(given) < 65536:
            raise InvalidURL(f"sentinel_fallback wants host:port[,host:port]: {url}")
        hosts.append((host.strip("[]"), int(given)))
    return hosts or [("localhost", port)]


def _database(url: BackendURL) -> int:
    """The database number of the URL's path (``/3``); 0 without one."""
    path = url.path.strip("/")
    if not path:
        return 0
    if not path.isdigit():
        raise InvalidURL(f"the path of a redis:// URL is a database number, as /0: {url}")
    return int(path)


def _count(raw: str, name: str) -> int:
    if not raw.isdigit():
        raise InvalidURL(f"option {name} must be a whole number >= 0, got {raw!r}")
    return int(raw)

