"""What etcd's failures mean: the :class:`conch.BackendUnavailable` each becomes.

Messages name the endpoint and the reason, never the password. Three kinds:

* **unreachable**: no answer (refused, timed out, connection lost, TLS failed);
* **refused**: etcd answered with an error (``code``: its gRPC status), except passing
  trouble inside etcd (no leader, a member stopping), which is only unavailable;
* **TLS**: a failed start whose cause may be TLS is checked again with a connection of
  our own (:func:`conch.backends.kit.tls_diagnosis.diagnose`), which names what a client
  library that already sent its request cannot see: the server's refusal of our certificate, or a
  plain client on a TLS port.
"""

from __future__ import annotations

import json
import ssl

from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from conch.backends.kit.tls_diagnosis import diagnose_endpoints, explain
from conch.errors import BackendUnavailable

Endpoint = tuple[str, int]

# gRPC status codes the gateway returns in ``code`` (google.golang.org/grpc/codes).
NOT_FOUND = 5
FAILED_PRECONDITION = 9
UNAUTHENTICATED = 16
# Passing trouble, not a refusal: a member stopping ("the client connection is closing"
# is CANCELLED), no leader or a leader change, a request timed out inside etcd.
_TRANSIENT = frozenset({1, 4, 14})
# etcd 3.4's answer to a gateway request over TLS with a client certificate that has a
# CommonName, once auth is on (etcd pull request 10392): the CN cannot pass the gateway.
_CN_REFUSED = "CommonName of client sending a request against gateway"


class Unreachable(BackendUnavailable):
    """No answer from ``endpoint`` (None: from every endpoint); ``tls_suspect`` when the
    failure may be a TLS problem: a TLS error, or a connection closed without an answer."""

    def __init__(self, text: str, endpoint: Endpoint | None, tls_suspect: bool) -> None:
        super().__init__(text)
        self.endpoint = endpoint
        self.tls_suspect = tls_suspect


class EtcdRequestFailed(BackendUnavailable):
    """etcd refused a request (not a passing failure); ``code`` is its gRPC status code."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


def unreachable(endpoint: Endpoint, exc: BaseException, every: bool = False) -> Unreachable:
    """The error for urllib3 failure ``exc`` at ``endpoint`` (or at every endpoint)."""
    tls_problem = explain(exc)
    if tls_problem is not None:
        reason = tls_problem
    elif isinstance(exc, NewConnectionError):
        reason = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    elif isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        reason = "timed out"
    elif isinstance(exc, ProtocolError | ConnectionError):
        reason = "connection lost"
    else:
        reason = type(exc).__name__
    where = "every endpoint" if every else f"{endpoint[0]}:{endpoint[1]}"
    suspect = tls_problem is not None or isinstance(exc, SSLError | ProtocolError)
    return Unreachable(f"etcd at {where} is unreachable ({reason})",
                       None if every else endpoint, suspect)


def refusal(endpoint: Endpoint, status: int, data: bytes) -> BackendUnavailable:
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
        return BackendUnavailable(f"{where} is unavailable (HTTP {status}"
                                  f"{': ' + text if text else ''})")
    if code in _TRANSIENT:
        return BackendUnavailable(f"{where} is unavailable ({message})")
    return EtcdRequestFailed(f"{where}: {message}", code)


def diagnosed(failure: Unreachable, context: ssl.SSLContext | None,
              timeout: float) -> BackendUnavailable:
    """``failure``, or the TLS problem behind it when a connection of our own finds one."""
    if failure.endpoint is None or not failure.tls_suspect:
        return failure
    host, port = failure.endpoint
    problem = diagnose_endpoints([failure.endpoint], context, timeout, "use an etcd+https:// URL")
    if problem is None:
        return failure
    return BackendUnavailable(f"etcd at {host}:{port} is unreachable ({problem})")

