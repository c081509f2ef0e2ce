"""What a failed TLS connection means, in words a user can act on (docs/kit.md, "TLS")."""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator

_NOT_TLS = "the server does not speak TLS on this port"
_EXPECTS_TLS = "the server expects TLS on this port"
_REFUSED = "the server refused the client certificate"
_UNTRUSTED = "wants a client certificate it did not get or trust"
_CERT_REQUIRED = "the server requires a client certificate: give one and its key"
# OpenSSL's reasons (ssl.SSLError.reason) and what they usually mean.
_MEANING = {
    "SSLV3_ALERT_BAD_CERTIFICATE": f"{_REFUSED}, or requires one",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": f"{_REFUSED}, or requires one",
    "TLSV1_ALERT_UNKNOWN_CA": f"{_REFUSED}: it must be signed by a CA the server trusts",
    "TLSV1_ALERT_ACCESS_DENIED": _REFUSED,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": _REFUSED,
    "TLSV1_ALERT_DECRYPT_ERROR": _REFUSED,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": f"{_REFUSED}: it has expired",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": _CERT_REQUIRED,
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": _CERT_REQUIRED,
    "CERTIFICATE_VERIFY_FAILED": "the server's certificate must be signed by the CA the URL "
                                 "names and name the URL's host",
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection during the handshake: "
                                    f"it does not speak TLS on this port, or {_UNTRUSTED}",
    **dict.fromkeys(["WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE",
                     "HTTP_REQUEST", "UNKNOWN_PROTOCOL"], _NOT_TLS),
}
# An ssl error quoted in another exception's text: "[SSL: REASON] words (_ssl.c:1006)".
_QUOTED_SSL_ERROR = re.compile(r"\[SSL: ([A-Z0-9_]+)\] (?:certificate verify failed: )?([^(]*)")
_OPENSSL_NOISE = re.compile(r"^\[[A-Z0-9_: ]+\] | \(_ssl\.c:\d+\)$")
_VERDICT_WAIT = 1.0  # seconds after the handshake for a refusal of our certificate


def explain(exc: BaseException) -> str | None:
    """What went wrong in TLS, if ``exc`` (or what it wraps or quotes) is a TLS failure."""
    for error in _chain(exc, set()):
        if isinstance(error, ssl.SSLError):
            eof = "UNEXPECTED_EOF_WHILE_READING" if isinstance(error, ssl.SSLEOFError) else ""
            detail = getattr(error, "verify_message", None) or error.strerror or str(error)
            return _sentence(error.reason or eof, _OPENSSL_NOISE.sub("", detail))
    quoted = _QUOTED_SSL_ERROR.search(str(exc))
    return None if quoted is None else _sentence(quoted[1], quoted[2].strip())


def diagnose_endpoints(endpoints: list[tuple[str, int]], context: ssl.SSLContext | None,
                       timeout: float, plain_hint: str) -> str | None:
    """The first TLS problem a connection of our own finds (None: none, or none reachable);
    without ``context``, whether a port expects TLS, then ``plain_hint``."""
    for host, port in endpoints:
        problem = _diagnose(host, port, context, timeout)
        if problem is not None:
            where = f"{host}:{port}: " if len(endpoints) > 1 else ""
            hint = f": {plain_hint}" if context is None else ""
            return f"{where}{problem}{hint}"
    return None


def _diagnose(host: str, port: int, context: ssl.SSLContext | None,
              timeout: float) -> str | None:
    """One endpoint's problem. Without ``context``, a handshake that trusts any server
    says whether the port speaks TLS: it succeeds, or ends in the server's TLS alert."""
    handshake_done = False
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                (context or _trusting_any()).wrap_socket(raw, server_hostname=host) as sock:
            if context is None:
                return _EXPECTS_TLS
            handshake_done = True
            sock.settimeout(min(timeout, _VERDICT_WAIT))
            if sock.recv(1):
                return None
    except TimeoutError:
        return None  # unreachable, or the server waits for our request: the session stands
    except ssl.SSLError as exc:
        if context is None:
            return _EXPECTS_TLS if "_ALERT_" in (exc.reason or "") else None
        if isinstance(exc, ssl.SSLEOFError) and not handshake_done \
                and _diagnose(host, port, None, timeout) is None:
            return f"TLS handshake failed: {_NOT_TLS}"
        return explain(exc)
    except OSError:
        if not handshake_done:
            return None
    return f"the server closed the connection after the TLS handshake: it {_UNTRUSTED}"


def _trusting_any() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _sentence(reason: str, detail: str) -> str:
    """``TLS handshake failed: <reason> (<what it means>)``, with a failed verification's detail."""
    words = reason.lower().replace("_", " ") or detail
    if reason == "CERTIFICATE_VERIFY_FAILED":
        words += f": {detail}"
    meaning = _MEANING.get(reason)
    return f"TLS handshake failed: {words}" + (f" ({meaning})" if meaning else "")


def _chain(error: object, seen: set[int]) -> Iterator[BaseException]:
    """``error`` and what it wraps: causes, contexts, PyMySQL's ``original_exception``, and
    exceptions in its ``args`` (urllib3's)."""
    if isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        yield error
        for inner in (error.__cause__, error.__context__,
                      getattr(error, "original_exception", None), *error.args):
            yield from _chain(inner, seen)
