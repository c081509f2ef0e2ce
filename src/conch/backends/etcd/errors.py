"""etcd's failures as :class:`conch.BackendUnavailable` naming the endpoint and the reason,
secrets scrubbed (:mod:`conch.backends.kit.errors`)."""

from __future__ import annotations

import json
import ssl

from urllib3 import exceptions

from conch.backends.kit.errors import scrub, unavailable
from conch.backends.kit.tls_diagnosis import diagnose_endpoints, explain
from conch.errors import BackendUnavailable
from conch.url import BackendURL

Endpoint = tuple[str, int]

# gRPC status codes the gateway returns in ``code`` (google.golang.org/grpc/codes).
NOT_FOUND = 5
FAILED_PRECONDITION = 9
UNAUTHENTICATED = 16
# Passing trouble, not a refusal: CANCELLED (a member stopping), DEADLINE_EXCEEDED,
# UNAVAILABLE (no leader, a leader change).
_TRANSIENT = frozenset({1, 4, 14})
# etcd 3.4's gateway refuses a client certificate with a CommonName once auth is on (etcd
# pull request 10392).
_CN_REFUSED = "CommonName of client sending a request against gateway"


class Unreachable(BackendUnavailable):
    """No answer; ``tls_suspect``: the endpoint, when TLS may be the cause."""

    def __init__(self, text: str, tls_suspect: Endpoint | None) -> None:
        super().__init__(text)
        self.tls_suspect = tls_suspect


class EtcdRequestFailed(BackendUnavailable):
    """etcd refused a request; ``code`` is its gRPC status code."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


def unreachable(url: BackendURL, endpoint: Endpoint, exc: BaseException,
                every: bool = False) -> Unreachable:
    """The error for urllib3's failure ``exc`` at ``endpoint`` (or at every endpoint)."""
    tls_problem = explain(exc)
    if tls_problem is not None:
        reason = tls_problem
    elif isinstance(exc, exceptions.NewConnectionError):
        reason = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    elif isinstance(exc, exceptions.TimeoutError | TimeoutError):
        reason = "timed out"
    elif isinstance(exc, exceptions.ProtocolError | ConnectionError):
        reason = "connection lost"
    else:
        reason = type(exc).__name__
    where = "every endpoint" if every else f"{endpoint[0]}:{endpoint[1]}"
    suspect = tls_problem is not None or isinstance(exc, exceptions.SSLError
                                                    | exceptions.ProtocolError)
    return Unreachable(scrub(f"etcd at {where} is unreachable ({reason})", url),
                       endpoint if suspect and not every else None)


def refusal(url: BackendURL, endpoint: Endpoint, status: int, data: bytes) -> BackendUnavailable:
    """The error for an HTTP answer other than 200."""
    where = f"etcd at {endpoint[0]}:{endpoint[1]}"
    try:
        answer = json.loads(data)
        message, code = str(answer.get("message") or answer["error"]), int(answer["code"])
    except (ValueError, KeyError, TypeError):
        text = data.decode(errors="replace").strip()[:200]
        if _CN_REFUSED in text:
            text += (" (etcd's JSON gateway refuses a client certificate with a CommonName "
                     "when auth is on: use one without a CN; the user comes from "
                     "user:password@)")
        return unavailable(url, f"{where} is unavailable (HTTP {status}"
                                f"{': ' + text if text else ''})")
    if code in _TRANSIENT:
        return unavailable(url, f"{where} is unavailable ({message})")
    return EtcdRequestFailed(scrub(f"{where}: {message}", url), code)


def diagnosed(failure: BackendUnavailable, context: ssl.SSLContext | None,
              timeout: float) -> BackendUnavailable:
    """``failure``, or the TLS problem behind it when a connection of our own finds one."""
    endpoint = failure.tls_suspect if isinstance(failure, Unreachable) else None
    problem = endpoint and diagnose_endpoints([endpoint], context, timeout,
                                              "use an etcd+https:// URL")
    if endpoint is None or problem is None:
        return failure
    return BackendUnavailable(f"etcd at {endpoint[0]}:{endpoint[1]} is unreachable ({problem})")
