"""The options of a ``redis://`` URL, the redis-py clients made from them (direct or through
Sentinel, TLS for ``rediss://``; their own retries off) and what their exceptions mean."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from conch.backends.kit.errors import scrub
from conch.backends.kit.tls import OptionNames, TLSFiles, client_context, tls_from_url
from conch.backends.kit.tls_diagnosis import diagnose_endpoints, explain
from conch.errors import InvalidURL
from conch.url import BackendURL

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
# redis-py's names, for the master and, with sentinel_ssl, the sentinels.
TLS_OPTIONS = OptionNames(ca="ssl_ca_certs", cert="ssl_certfile", key="ssl_keyfile",
                          key_password="ssl_password", verify_mode="ssl_cert_reqs")
_SENTINEL_OPTIONS = ("sentinel_fallback", "sentinel_username", "sentinel_password",
                     "sentinel_ssl")
OPTIONS = frozenset({"ttl", "connect_timeout", "socket_timeout", "wait_replicas", "sentinel",
                     *_SENTINEL_OPTIONS, *TLS_OPTIONS})
# Replies that mean the server refused who we said we are (Redis 7: "HELLO must be called
# with the client already authenticated").
_CREDENTIAL_ERRORS = ("NOAUTH", "WRONGPASS", "NOPERM", "AUTH")
# How redis-py says the server hung up on a request.
_CLOSED = ("Connection closed by server", "Connection reset by peer")
_MASTER_NOT_FOUND = (redis.sentinel.MasterNotFoundError,
                     redis.asyncio.sentinel.MasterNotFoundError)


@dataclasses.dataclass(frozen=True)
class RedisOptions:
    """What a ``redis://`` URL asks for (each option: ``docs/redis.md``)."""

    ttl: float
    connect_timeout: float
    socket_timeout: float
    wait_replicas: int
    sentinel: str | None
    tls: TLSFiles | None
    tls_to: str | None  # "master", "sentinels" (then maybe the master too) or None
    where: str  # for messages: host:port list (and the sentinels' master name)
    hosts: list[tuple[str, int]]  # the Redis host, or the sentinels
    master: dict[str, Any] = dataclasses.field(repr=False)  # redis-py's connection kwargs
    sentinels: dict[str, Any] = dataclasses.field(repr=False)

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
        if not (wait_replicas := query.get("wait_replicas", "0")).isdigit():
            raise InvalidURL(f"option wait_replicas must be a whole number >= 0, got "
                             f"{wait_replicas!r}")
        hosts = _hosts(url, query)
        where = ",".join(f"{host}:{port}" for host, port in hosts)
        connect_timeout = url.float_option("connect_timeout", 2.0)
        tls_files = {} if tls is None else {
            "ssl_ca_certs": tls.ca, "ssl_certfile": tls.cert, "ssl_keyfile": tls.key,
            "ssl_password": tls.key_password, "ssl_cert_reqs": tls.verify_mode}
        # The sentinels get neither the master's credentials nor its TLS, only their own.
        sentinels = {"socket_connect_timeout": connect_timeout,
                     "username": query.get("sentinel_username") or None,
                     "password": query.get("sentinel_password") or None,
                     "retry": Retry(NoBackoff(), 0),
                     **({"ssl": True, **tls_files} if sentinel_tls else {})}
        master = {"db": _database(url), "username": url.username or None,
                  "password": url.password, "socket_connect_timeout": connect_timeout,
                  "socket_keepalive": True, "client_name": "conch",
                  **({"ssl": True, **tls_files} if url.scheme == "rediss" else {})}
        return cls(
            ttl=url.float_option("ttl", 10.0), connect_timeout=connect_timeout,
            socket_timeout=url.float_option("socket_timeout", 2.0),
            wait_replicas=int(wait_replicas), sentinel=sentinel, tls=tls,
            tls_to="sentinels" if sentinel_tls else "master" if tls else None,
            where=f"{where} (sentinels of {sentinel!r})" if sentinel else where,
            hosts=hosts, master=master, sentinels=sentinels,
        )

    @functools.cached_property
    def ttl_ms(self) -> int:
        """The TTL in whole milliseconds (at least 1), as the scripts take it."""
        return max(1, round(self.ttl * 1000))

    def client(self, socket_timeout: float) -> redis.Redis:
        """A blocking client of the master, with its own pool and reply timeout."""
        settings = {**self.master, "socket_timeout": socket_timeout,
                    "retry": Retry(NoBackoff(), 0)}
        if self.sentinel is None:
            host, port = self.hosts[0]
            return redis.Redis(host=host, port=port, **settings)
        sentinels = redis.sentinel.Sentinel(
            self.hosts, sentinel_kwargs={**self.sentinels, "socket_timeout": socket_timeout})
        master: redis.Redis = sentinels.master_for(self.sentinel, **settings)
        return master

    def async_client(self) -> tuple[redis.asyncio.Redis, redis.asyncio.sentinel.Sentinel | None]:
        """An asyncio client of the master (no reply timeout: each call has its own), and
        its Sentinel client, if any."""
        settings = {**self.master, "retry": AsyncRetry(NoBackoff(), 0)}
        if self.sentinel is None:
            host, port = self.hosts[0]
            return redis.asyncio.Redis(host=host, port=port, **settings), None
        sentinels = redis.asyncio.sentinel.Sentinel(
            self.hosts, sentinel_kwargs={**self.sentinels, "socket_timeout": self.socket_timeout,
                                         "retry": AsyncRetry(NoBackoff(), 0)})
        return sentinels.master_for(self.sentinel, **settings), sentinels


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
    if path and not path.isdigit():
        raise InvalidURL(f"the path of a redis:// URL is a database number, as /0: {url}")
    return int(path or 0)


def describe(url: BackendURL, options: RedisOptions, exc: BaseException) -> str:
    """``exc``, raised by a client of ``url``, as a message for users (no secret)."""
    where, tls_problem = options.where, explain(exc)
    if isinstance(exc, _MASTER_NOT_FOUND):
        # Its text embeds the repr of every sentinel client: say what it means instead.
        text = (f"redis at {where}: no sentinel answered with a reachable master named "
                f"{options.sentinel!r}{_sentinel_trouble(str(exc), tls_problem)}")
    elif tls_problem is not None:
        text = f"redis at {where}: {tls_problem}"
    elif _is_credential_error(exc):
        text = (f"redis at {where} requires a password: use redis://[user]:PASSWORD@host"
                if url.password is None else
                f"redis at {where} refused the URL's credentials (user or password): {exc}")
    elif isinstance(exc, RedisTimeoutError):
        hint = " (no answer to the TLS handshake: does the port speak TLS?)" if (
            url.scheme == "rediss" and "connecting" in str(exc)) else ""
        text = (f"redis at {where} did not answer in time ({exc}){hint}; see the URL "
                "options connect_timeout and socket_timeout")
    elif isinstance(exc, RedisConnectionError):
        text = f"redis at {where} is unreachable: {exc}"
    else:
        text = f"redis at {where} failed: {type(exc).__name__}: {exc}"
    return scrub(text, url)


def describe_start_failure(url: BackendURL, options: RedisOptions, exc: BaseException) -> str:
    """:func:`describe` of a failed first request; a connection closed on us (as a TLS port
    does on plain text) is diagnosed at the master or the sentinels."""
    if any(closed in str(exc) for closed in _CLOSED):
        sentinels = options.sentinel is not None
        tls = options.tls_to == "sentinels" if sentinels else options.tls_to is not None
        context = client_context(options.tls, f"redis at {options.where}") \
            if tls and options.tls is not None else None
        problem = diagnose_endpoints(options.hosts, context, options.connect_timeout,
                                     "add sentinel_ssl=true" if sentinels else "use rediss://")
        if problem is not None:
            return scrub(f"redis at {options.where}: {problem}", url)
    return describe(url, options, exc)


def _sentinel_trouble(text: str, tls_problem: str | None) -> str:
    """Why the sentinels gave no master, from the errors redis-py quotes in ``text``."""
    if tls_problem is not None:
        return f": {tls_problem} (sentinels: see sentinel_ssl and the ssl_* options)"
    if any(refusal in text for refusal in ("NOAUTH", "Authentication required",
                                           "already authenticated")):
        return ": the sentinels require a password: give sentinel_password"
    if "AuthenticationError" in text or "WRONGPASS" in text:
        return ": the sentinels refused sentinel_username / sentinel_password"
    return ""


def _is_credential_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, AuthenticationError) or (isinstance(exc, ResponseError) and (
        text.startswith(_CREDENTIAL_ERRORS) or "authenticated" in text))
