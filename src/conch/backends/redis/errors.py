"""What a redis-py exception means, for users: what failed where, TLS failures in words
(:mod:`conch.backends.kit.tls_diagnosis`), and why the sentinels gave no master. Secrets are
removed by :func:`conch.backends.kit.errors.translated` / ``scrub``."""

from __future__ import annotations

import redis.asyncio.sentinel
import redis.sentinel
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch.backends.kit.errors import scrub
from conch.backends.kit.tls import client_context
from conch.backends.kit.tls_diagnosis import diagnose_endpoints, explain
from conch.backends.redis.client import RedisOptions
from conch.url import BackendURL

# Replies that mean the server refused who we said we are; Redis 7 refuses HELLO before
# AUTH with "...called with the client already authenticated".
_CREDENTIAL_ERRORS = ("NOAUTH", "WRONGPASS", "NOPERM", "AUTH")
# How redis-py says the server hung up on a request.
_CLOSED = ("Connection closed by server", "Connection reset by peer")
_MASTER_NOT_FOUND = (redis.sentinel.MasterNotFoundError,
                     redis.asyncio.sentinel.MasterNotFoundError)


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
    """:func:`describe` of a failed first request; a connection closed on us (a TLS port
    does on plain text, a TLS 1.3 server on a client certificate it refuses) is diagnosed
    at the master or the sentinels."""
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
    # Redis 7 answers a client without credentials "HELLO must be called with the client
    # already authenticated" (redis-py says HELLO first), older ones NOAUTH.
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
