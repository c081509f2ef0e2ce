"""TLS for the server backends: a client context from a URL's files, and TLS failures in words.

:func:`from_url` reads the ``ssl_*`` options that ``mysql://`` and ``memcached://`` share.
:class:`TLSOptions` is what a URL says about TLS (CA file or directory, client certificate,
key and its password, ciphers, how to check the server); :meth:`TLSOptions.context` reads the
files into an :class:`ssl.SSLContext`, raising :class:`TLSFileError` with the option and the
path when one cannot be read. :func:`explain` turns the ``ssl`` error buried in a client
library's exception (wrapped differently by redis-py, PyMySQL and pymemcache) into one
sentence saying what went wrong, for :class:`conch.BackendUnavailable`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import ssl
from collections.abc import Iterator

from conch.errors import InvalidURL
from conch.url import BackendURL

VERIFY_MODES = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
                "none": ssl.CERT_NONE}
"""The values of a ``..._verify_mode`` / ``ssl_cert_reqs`` option."""

# OpenSSL's reasons (ssl.SSLError.reason) for an alert the server sent about our certificate.
_CLIENT_CERTIFICATE_REFUSED = frozenset({
    "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "TLSV1_ALERT_ACCESS_DENIED", "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_DECRYPT_ERROR",
})
_CLIENT_CERTIFICATE_MISSING = frozenset({"TLSV13_ALERT_CERTIFICATE_REQUIRED",
                                         "PEER_DID_NOT_RETURN_A_CERTIFICATE"})
# What a client reads when the other end answers the handshake in plain text.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                      "HTTP_REQUEST", "UNKNOWN_PROTOCOL"})
# An ssl error quoted in another exception's text: "[SSL: REASON] words (_ssl.c:1006)".
_QUOTED_SSL_ERROR = re.compile(r"\[SSL: ([A-Z0-9_]+)\][^(]*")


URL_OPTIONS = ("ssl", "ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_key_password",
               "ssl_cipher", "ssl_verify_mode", "ssl_check_hostname")
"""The TLS options of ``mysql://`` and ``memcached://`` URLs (MySQL's and PyMySQL's names)."""


class TLSFileError(Exception):
    """A TLS file of the URL cannot be used; the message names the option and the path."""


@dataclasses.dataclass(frozen=True)
class TLSOptions:
    """A URL's TLS settings, by meaning (each backend reads them from its own option names)."""

    ca: str | None = None
    """File of CA certificates to check the server against (else the system's CAs)."""
    ca_path: str | None = None
    """Directory of hashed CA certificates (``c_rehash``), added to :attr:`ca`."""
    cert: str | None = None
    """Client certificate (PEM; may hold the key too)."""
    key: str | None = None
    key_password: str | None = dataclasses.field(default=None, repr=False)
    ciphers: str | None = None
    verify_mode: str = "required"
    """One of :data:`VERIFY_MODES`: ``none`` accepts any server certificate."""
    check_hostname: bool = True
    names: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)
    """Field → the URL option that set it, for messages (``{"ca": "ssl_ca"}``)."""

    def context(self) -> ssl.SSLContext:
        """A client context: reads the files now (raises :class:`TLSFileError`)."""
        context = ssl.create_default_context()
        context.check_hostname = self.check_hostname and self.verify_mode != "none"
        context.verify_mode = VERIFY_MODES[self.verify_mode]
        if self.ca or self.ca_path:
            with self._reading("ca" if self.ca else "ca_path"):
                context.load_verify_locations(cafile=self.ca, capath=self.ca_path)
        if self.cert:
            with self._reading("cert"):
                # Without a password, OpenSSL would prompt on the terminal for one.
                context.load_cert_chain(self.cert, self.key,
                                        self.key_password or _no_key_password)
        elif self.key:
            raise TLSFileError(f"{self._name('key')} is set without {self._name('cert')}: "
                               f"give the client certificate too")
        if self.ciphers:
            try:
                context.set_ciphers(self.ciphers)
            except ssl.SSLError:
                raise TLSFileError(f"{self._name('ciphers')}={self.ciphers!r} names no cipher "
                                   f"OpenSSL knows") from None
        return context

    def _name(self, field: str) -> str:
        return self.names.get(field, field)

    @contextlib.contextmanager
    def _reading(self, field: str) -> Iterator[None]:
        """Turn the errors of loading ``field``'s files into one :class:`TLSFileError`."""
        fields = ("cert", "key") if field == "cert" else ("ca", "ca_path")
        try:
            yield
        except ssl.SSLError as exc:  # read, but not a usable certificate or key
            if exc.reason == "KEY_VALUES_MISMATCH":
                why = "the key does not belong to the certificate"
            elif field == "cert":
                why = "not a PEM certificate and key, or the key password is wrong"
            else:
                why = f"not PEM certificates ({exc.reason or exc})"
        except OSError as exc:
            why = exc.strerror or str(exc)
        except _EncryptedKey:
            why = f"the key is encrypted: give its password ({self._name('key_password')})"
        else:
            return
        shown = ", ".join(f"{self._name(name)}={getattr(self, name)}" for name in fields
                          if getattr(self, name))
        raise TLSFileError(f"cannot use the TLS files ({shown}): {why}") from None


class _EncryptedKey(Exception):
    """The client key is encrypted and the URL gives no password."""


def _no_key_password() -> str:
    raise _EncryptedKey


def from_url(url: BackendURL) -> TLSOptions | None:
    """The TLS :data:`URL_OPTIONS` of ``url`` ask for, or ``None`` (plain TCP). TLS is on with
    ``ssl=true`` or any other of them; raises :class:`InvalidURL` on a bad value."""
    given = [name for name in URL_OPTIONS if name in url.query and name != "ssl"]
    if not url.bool_option("ssl", bool(given)):
        if given:
            raise InvalidURL(f"{', '.join(given)} cannot go with ssl=false: {url}")
        return None
    verify_mode = url.query.get("ssl_verify_mode", "required").lower()
    if verify_mode not in VERIFY_MODES:
        raise InvalidURL(f"option ssl_verify_mode must be one of {', '.join(VERIFY_MODES)}, "
                         f"got {verify_mode!r}")
    query = url.query
    return TLSOptions(
        ca=query.get("ssl_ca"), ca_path=query.get("ssl_capath"), cert=query.get("ssl_cert"),
        key=query.get("ssl_key"), key_password=query.get("ssl_key_password"),
        ciphers=query.get("ssl_cipher"), verify_mode=verify_mode,
        check_hostname=url.bool_option("ssl_check_hostname", True),
        names={"ca": "ssl_ca", "ca_path": "ssl_capath", "cert": "ssl_cert", "key": "ssl_key",
               "key_password": "ssl_key_password", "ciphers": "ssl_cipher"},
    )


def explain(exc: BaseException) -> str | None:
    """What went wrong in TLS, if ``exc`` (or an exception it wraps, or quotes in its text, as
    redis-py's sentinel errors do) is a TLS failure."""
    for error in _chain(exc):
        if isinstance(error, ssl.SSLError):
            eof = isinstance(error, ssl.SSLEOFError) \
                or error.reason == "UNEXPECTED_EOF_WHILE_READING"
            return _explain(error.reason or "", str(error), eof)
    quoted = _QUOTED_SSL_ERROR.search(str(exc))
    if quoted:
        return _explain(quoted.group(1), quoted.group(0), eof=False)
    return None


def _explain(reason: str, text: str, eof: bool) -> str:
    if reason == "CERTIFICATE_VERIFY_FAILED":
        why = text.partition("certificate verify failed: ")[2].partition(" (_ssl")[0]
        return (f"TLS: the server's certificate was refused ({why or 'verify failed'}): is the "
                f"CA option the CA that signed it, and the host the one it names?")
    if reason in _CLIENT_CERTIFICATE_MISSING:
        return "TLS: the server requires a client certificate: give one (and its key)"
    if reason in _CLIENT_CERTIFICATE_REFUSED:
        return (f"TLS: the server refused the client certificate ({_words(reason)}): "
                f"it must be signed by a CA the server trusts")
    if reason in _NOT_TLS:
        return f"TLS: the server does not speak TLS on this port ({_words(reason)})"
    if eof:
        return ("TLS: the server closed the connection in the handshake: it does not speak "
                "TLS on this port, or wants a client certificate it did not get or trust")
    return f"TLS failed: {_words(reason) or text}"


def _words(reason: str) -> str:
    return reason.lower().replace("_", " ")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, PyMySQL's ``original_exception``."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        wrapped = getattr(error, "original_exception", None)
        pending += [error.__cause__, error.__context__,
                    wrapped if isinstance(wrapped, BaseException) else None]
