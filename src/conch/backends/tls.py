"""TLS for the server backends: the client's SSL context, and what a failed TLS connection means.

* **files** (CA, client certificate and key) are read at ``start()``, never when the
  URL is parsed (no I/O then). A missing or unreadable file, or a key that its password
  does not open, is a :class:`conch.BackendUnavailable` naming the file (never the
  password), as when the server cannot be reached: like it, it is found at start.
* **reasons**: an ``ssl.SSLError`` becomes OpenSSL's reason in words
  ("certificate verify failed: unable to get local issuer certificate") and what it
  usually means, without the ``_ssl.c`` line.
* **diagnosis**: the server's verdict on our client certificate comes after the
  client's side of a TLS 1.3 handshake, and a client library that already sent its
  request often sees only a closed connection. When ``start()`` fails, the backend
  calls :func:`diagnose`: one connection of our own that waits for the server's alert
  (or, without TLS, checks whether the port expects it), to name the problem.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl

from conch.errors import BackendUnavailable

# How long a diagnosis waits, after its handshake, for the server to refuse the client
# certificate: servers send the alert as soon as they read the client's last message.
_VERDICT_WAIT = 1.0
_OPENSSL_NOISE = re.compile(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\] |^\[SSL\] | \(_ssl\.c:\d+\)$")
_MEANING = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate",
    # Servers send these for a certificate they do not trust, and some for none at all.
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused the client certificate, or requires one",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the server refused the client certificate, "
                                       "or requires one",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the client certificate's CA",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server refused the expired client certificate",
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on this port",
    "PACKET_LENGTH_TOO_LONG": "the server does not speak TLS on this port",
    "RECORD_LAYER_FAILURE": "the server does not speak TLS on this port",
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection during the handshake: "
                                    "does it speak TLS on this port?",
}


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """What a URL asks of TLS. Paths are shown in messages; the key password never is."""

    ca: str | None = None
    """The CA certificates (PEM) that sign the server's certificate; None: the system's."""
    cert: str | None = None
    """The client certificate (PEM), for servers that require one."""
    key: str | None = None
    """Its private key; None: in the certificate's file."""
    key_password: str | None = dataclasses.field(default=None, repr=False)
    verify: bool = True
    """Check the server's certificate (off only when asked, as kazoo's ``verify_certs``)."""
    check_hostname: bool = True
    """Check that the server's certificate names the host of the URL."""


def client_context(files: TLSFiles, server: str) -> ssl.SSLContext:
    """A client context as ``files`` ask; :class:`BackendUnavailable` naming the file
    that cannot be used (``server`` says where we were going, for the message)."""
    for what, path in (("CA file", files.ca), ("client certificate", files.cert),
                       ("client key", files.key)):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise BackendUnavailable(
                    f"cannot use TLS to {server}: cannot read the {what} {path!r} "
                    f"({exc.strerror or exc})") from None
    try:
        context = ssl.create_default_context(cafile=files.ca)
    except ssl.SSLError:
        raise BackendUnavailable(f"cannot use TLS to {server}: the CA file {files.ca!r} "
                                 f"holds no PEM certificate") from None
    if not files.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = files.check_hostname
    if files.cert is not None:
        try:
            # A callable, so that an encrypted key without a password fails here instead
            # of OpenSSL asking for one on the terminal.
            context.load_cert_chain(files.cert, files.key,
                                    password=lambda: files.key_password or "")
        except ssl.SSLError as exc:
            key = f"key {files.key!r}" if files.key else "the key in it"
            reason = ("the key does not belong to the certificate"
                      if exc.reason == "KEY_VALUES_MISMATCH" else
                      "not a PEM certificate and key, or the key's password is wrong or missing")
            raise BackendUnavailable(
                f"cannot use TLS to {server}: cannot load the client certificate "
                f"{files.cert!r} with {key}: {reason}") from None
    return context


def reason(exc: BaseException) -> str:
    """What TLS error ``exc`` (an ``ssl.SSLError``) means, in words a user can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: certificate verify failed: {exc.verify_message}"
    text = _OPENSSL_NOISE.sub("", str(exc.args[1]) if len(exc.args) > 1 else str(exc))
    code = getattr(exc, "reason", None)
    if isinstance(exc, ssl.SSLEOFError) and code is None:
        code = "UNEXPECTED_EOF_WHILE_READING"
    meaning = _MEANING.get(code or "")
    return f"TLS handshake failed: {text}" + (f" ({meaning})" if meaning else "")


def diagnose(host: str, port: int, context: ssl.SSLContext | None, timeout: float) -> str | None:
    """What is wrong with TLS to ``host:port``, found by a connection of our own; None when
    nothing is (or the server cannot be reached at all: not a TLS problem).

    With ``context`` (the client's TLS settings): the handshake's failure, else the
    server's refusal of our certificate that follows it. Without (a plain client):
    whether the port expects TLS.
    """
    if context is None:
        return "the server expects TLS on this port" if _speaks_tls(host, port, timeout) else None
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with raw:
        try:
            sock = context.wrap_socket(raw, server_hostname=host)
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLEOFError) and not _speaks_tls(host, port, timeout):
                return "TLS handshake failed: the server does not speak TLS on this port"
            return reason(exc)
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
                return reason(exc)
            except OSError:
                pass
            return ("the server closed the connection after the TLS handshake: "
                    "it may require a client certificate it trusts")


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
