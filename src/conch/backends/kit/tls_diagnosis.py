"""What a failed TLS connection means, in words a user can act on: :func:`explain` finds
the ``ssl.SSLError`` in any client library's exception; :func:`diagnose_endpoints` opens
a connection of its own to hear the server's verdict on our certificate. Details: docs/kit.md.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator

NOT_TLS = "the server does not speak TLS on this port"
EXPECTS_TLS = "the server expects TLS on this port"
_REFUSED = "the server refused the client certificate"
_REFUSED_OR_MISSING = f"{_REFUSED}, or requires one"
_UNTRUSTED = "wants a client certificate it did not get or trust"
_CERT_REQUIRED = "the server requires a client certificate: give one and its key"

# OpenSSL's reasons (ssl.SSLError.reason) and what they usually mean.
_MEANING = {
    # Alerts the server sends about our certificate (some servers send the first two for
    # no certificate at all).
    "SSLV3_ALERT_BAD_CERTIFICATE": _REFUSED_OR_MISSING,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": _REFUSED_OR_MISSING,
    "TLSV1_ALERT_UNKNOWN_CA": f"{_REFUSED}: it must be signed by a CA the server trusts",
    "TLSV1_ALERT_ACCESS_DENIED": _REFUSED,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": _REFUSED,
    "TLSV1_ALERT_DECRYPT_ERROR": _REFUSED,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": f"{_REFUSED}: it has expired",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": _CERT_REQUIRED,
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": _CERT_REQUIRED,
    # What a client reads when the other end answers the handshake in plain text.
    "WRONG_VERSION_NUMBER": NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": NOT_TLS,
    "RECORD_LAYER_FAILURE": NOT_TLS,
    "HTTP_REQUEST": NOT_TLS,
    "UNKNOWN_PROTOCOL": NOT_TLS,
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection during the handshake: "
                                    f"it does not speak TLS on this port, or {_UNTRUSTED}",
}
_VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"
_VERIFY_MEANING = ("the server's certificate must be signed by the CA the URL names and name "
                   "the URL's host")
# An ssl error quoted in another exception's text: "[SSL: REASON] words (_ssl.c:1006)".
_QUOTED_SSL_ERROR = re.compile(r"\[SSL: ([A-Z0-9_]+)\] ([^(]*)")
_OPENSSL_NOISE = re.compile(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\] |^\[SSL\] | \(_ssl\.c:\d+\)$")
# How long a diagnosis waits, after its handshake, for the server to refuse the client
# certificate: servers send the alert as soon as they read the client's last message.
_VERDICT_WAIT = 1.0


def explain(exc: BaseException) -> str | None:
    """What went wrong in TLS, if ``exc`` (or an exception it wraps, or quotes in its
    text) is a TLS failure; None if it is not one."""
    for error in _chain(exc):
        if isinstance(error, ssl.SSLError):
            return in_words(error)
    quoted = _QUOTED_SSL_ERROR.search(str(exc))
    if quoted is None:
        return None
    detail = quoted.group(2).strip()
    return _sentence(quoted.group(1), detail.partition("certificate verify failed: ")[2]
                     or detail)


def in_words(error: ssl.SSLError) -> str:
    """``error`` as :func:`explain` says it."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return _sentence(_VERIFY_FAILED, error.verify_message or "")
    code = error.reason or ("UNEXPECTED_EOF_WHILE_READING"
                            if isinstance(error, ssl.SSLEOFError) else "")
    text = str(error.args[1]) if len(error.args) > 1 else str(error)
    return _sentence(code, _OPENSSL_NOISE.sub("", text))


def diagnose_endpoints(endpoints: list[tuple[str, int]], context: ssl.SSLContext | None,
                       timeout: float, plain_hint: str) -> str | None:
    """The first TLS problem found by a connection of our own to one of ``endpoints``
    (prefixed with ``host:port:`` when there are several); None when none is found, or no
    endpoint can be reached at all (not a TLS problem).

    With ``context`` (the client's TLS settings): the handshake's failure, else the server's
    refusal of our certificate that follows it. Without (a plain client): whether the port
    expects TLS (:data:`EXPECTS_TLS`), followed by ``plain_hint`` ("use rediss://").
    """
    for host, port in endpoints:
        problem = _diagnose(host, port, context, timeout)
        if problem is not None:
            where = f"{host}:{port}: " if len(endpoints) > 1 else ""
            hint = f": {plain_hint}" if context is None else ""
            return f"{where}{problem}{hint}"
    return None


def _diagnose(host: str, port: int, context: ssl.SSLContext | None,
              timeout: float) -> str | None:
    if context is None:
        return EXPECTS_TLS if _speaks_tls(host, port, timeout) else None
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with raw:
        try:
            sock = context.wrap_socket(raw, server_hostname=host)
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLEOFError) and not _speaks_tls(host, port, timeout):
                return f"TLS handshake failed: {NOT_TLS}"
            return in_words(exc)
        except OSError:
            return None
        with sock:
            sock.settimeout(min(timeout, _VERDICT_WAIT))
            try:
                if sock.recv(1):
                    return None
            except TimeoutError:
                return None  # the server waits for our request: the TLS session stands
            except ssl.SSLError as exc:
                return in_words(exc)
            except OSError:
                pass
            return f"the server closed the connection after the TLS handshake: it {_UNTRUSTED}"


def _sentence(reason: str, detail: str) -> str:
    if reason == _VERIFY_FAILED:
        return f"TLS handshake failed: certificate verify failed: {detail} ({_VERIFY_MEANING})"
    meaning = _MEANING.get(reason)
    words = reason.lower().replace("_", " ") or detail
    return f"TLS handshake failed: {words}" + (f" ({meaning})" if meaning else "")


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """True when ``host:port`` answers a TLS handshake that trusts any certificate: it
    succeeds, or the server ends it with a TLS alert (it wants a client certificate)."""
    anything = ssl.create_default_context()
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                anything.wrap_socket(raw, server_hostname=host):
            return True
    except ssl.SSLError as exc:
        return "_ALERT_" in (exc.reason or "")
    except OSError:
        return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, PyMySQL's ``original_exception``, and
    exceptions in its ``args`` (urllib3's)."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        pending += [error.__cause__, error.__context__,
                    getattr(error, "original_exception", None), *error.args]
