"""The ``redis://`` backend's error text: what a redis-py exception means, for users.

Never a credential: the URL's password and secret options are replaced by ``***``. TLS
failures are said in words (:func:`conch.backends.kit.tls_diagnosis.explain`); a sentinel that
gives no master is asked nothing more, but the errors redis-py collected from each sentinel
say why (wrong sentinel credentials, TLS).
"""

from __future__ import annotations

import redis.asyncio.sentinel
import redis.sentinel
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch.backends.kit.tls_diagnosis import explain
from conch.url import BackendURL

# Replies that mean the server refused who we said we are.
_CREDENTIAL_ERRORS = ("NOAUTH", "WRONGPASS", "NOPERM", "AUTH")
# How redis-py says the server hung up on a request.
_CLOSED = ("Connection closed by server", "Connection reset by peer")
# The blocking and the asyncio sentinel clients raise distinct classes.
_MASTER_NOT_FOUND = (redis.sentinel.MasterNotFoundError,
                     redis.asyncio.sentinel.MasterNotFoundError)


def describe(url: BackendURL, where: str, sentinel: str | None, exc: BaseException) -> str:
    """``exc``, raised by a client of ``url`` (the server at ``where``, or the sentinels of
    master ``sentinel``), as a message for users: what failed where, never a credential."""
    tls_problem = explain(exc)
    if isinstance(exc, _MASTER_NOT_FOUND):
        # Its text embeds the repr of every sentinel client: say what it means instead.
        text = (f"redis at {where}: no sentinel answered with a reachable master "
                f"named {sentinel!r}{_sentinel_trouble(str(exc), tls_problem)}")
    elif tls_problem is not None:
        text = f"redis at {where}: {tls_problem}"
    elif url.password is None and _is_credential_error(exc):
        text = f"redis at {where} requires a password: use redis://[user]:PASSWORD@host"
    elif _is_credential_error(exc):
        text = f"redis at {where} refused the URL's credentials (user or password): {exc}"
    elif isinstance(exc, RedisTimeoutError):
        tls_hint = " (no answer to the TLS handshake: does the port speak TLS?)" if (
            url.scheme == "rediss" and "connecting" in str(exc)) else ""
        text = (f"redis at {where} did not answer in time ({exc}){tls_hint}; see the URL "
                f"options connect_timeout and socket_timeout")
    elif isinstance(exc, RedisConnectionError):
        text = f"redis at {where} is unreachable: {exc}"
    else:
        text = f"redis at {where} failed: {type(exc).__name__}: {exc}"
    for secret in url.secrets:
        text = text.replace(secret, "***")
    return text


def closed_on_us(exc: BaseException) -> bool:
    """Whether the server (or every sentinel) hung up on the request: a TLS port does on
    plain text, and a TLS 1.3 server on a client certificate it refuses."""
    return any(closed in str(exc) for closed in _CLOSED)


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
    if isinstance(exc, AuthenticationError):
        return True
    # Redis 7 refuses HELLO before AUTH with "...called with the client already authenticated".
    text = str(exc)
    return isinstance(exc, ResponseError) and (
        text.startswith(_CREDENTIAL_ERRORS) or "authenticated" in text
    )
