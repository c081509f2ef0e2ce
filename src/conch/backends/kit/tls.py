"""TLS for the server backends: a URL's TLS options, by meaning, and the client context they
make (values checked at parse time, files read at connect time; docs/kit.md, "TLS")."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator

from conch.errors import BackendUnavailable, InvalidURL
from conch.url import BackendURL

VERIFY_MODES = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
                "none": ssl.CERT_NONE}
"""The values of a verify-mode option (``ssl_verify_mode``, redis-py's ``ssl_cert_reqs``)."""


@dataclasses.dataclass(frozen=True)
class OptionNames:
    """A backend's URL option for each TLS setting (None: it has none); ``verify`` is a flag
    (false: verify mode ``none``), ``verify_mode`` one of :data:`VERIFY_MODES`."""

    ca: str
    cert: str
    key: str
    key_password: str | None = None
    ca_path: str | None = None
    ciphers: str | None = None
    verify_mode: str | None = None
    verify: str | None = None
    check_hostname: str | None = None

    def __iter__(self) -> Iterator[str]:
        return (name for name in dataclasses.astuple(self) if name is not None)


SSL_OPTIONS = OptionNames(
    ca="ssl_ca", ca_path="ssl_capath", cert="ssl_cert", key="ssl_key",
    key_password="ssl_key_password", ciphers="ssl_cipher", verify_mode="ssl_verify_mode",
    check_hostname="ssl_check_hostname")
"""The ``ssl_*`` options of ``mysql://`` and ``memcached://`` (MySQL's and PyMySQL's names)."""
SSL_URL_OPTIONS = frozenset({"ssl", *SSL_OPTIONS})
"""Every TLS option of those URLs: the ``ssl`` flag (:func:`from_ssl_options`) and the rest."""


class TLSFileError(Exception):
    """A TLS file of the URL cannot be used; the message names the option and the path."""


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """A URL's TLS settings, by meaning. Paths are shown in messages; the password never is."""

    names: OptionNames  # where they came from, for messages
    ca: str | None = None  # else the system's CAs
    ca_path: str | None = None  # a c_rehash directory, added to ca
    cert: str | None = None  # PEM; may hold the key too
    key: str | None = None
    key_password: str | None = dataclasses.field(default=None, repr=False)
    ciphers: str | None = None
    verify_mode: str = "required"  # one of VERIFY_MODES
    check_hostname: bool = True

    @classmethod
    def from_url(cls, url: BackendURL, names: OptionNames) -> TLSFiles:
        """The settings ``url`` gives under ``names``; :class:`InvalidURL` on a bad value."""
        def option(name: str | None) -> str | None:
            return url.query.get(name) or None if name is not None else None

        verify_mode = (option(names.verify_mode) or "required").lower()
        if verify_mode not in VERIFY_MODES:
            raise InvalidURL(f"option {names.verify_mode} must be one of "
                             f"{', '.join(VERIFY_MODES)}, got {verify_mode!r}")
        if names.verify is not None and not url.bool_option(names.verify, True):
            verify_mode = "none"
        verify = verify_mode != "none"
        check_hostname = verify if names.check_hostname is None else \
            url.bool_option(names.check_hostname, verify)
        if check_hostname and not verify:
            checked = f"{names.verify}=true" if names.verify else f"{names.verify_mode}=required"
            raise InvalidURL(f"{names.check_hostname}=true needs {checked}: {url}")
        cert = option(names.cert)
        for dependent in (names.key, names.key_password):
            if dependent is not None and option(dependent) and not cert:
                raise InvalidURL(f"{dependent} needs {names.cert} (the client certificate): "
                                 f"{url}")
        return cls(names, ca=option(names.ca), ca_path=option(names.ca_path), cert=cert,
                   key=option(names.key), key_password=option(names.key_password),
                   ciphers=option(names.ciphers), verify_mode=verify_mode,
                   check_hostname=check_hostname)

    @property
    def verify(self) -> bool:
        return self.verify_mode != "none"

    def context(self) -> ssl.SSLContext:
        """A client context: reads the files now (raises :class:`TLSFileError`)."""
        context = ssl.create_default_context()
        context.check_hostname = self.check_hostname
        context.verify_mode = VERIFY_MODES[self.verify_mode]
        if self.ciphers:
            try:
                context.set_ciphers(self.ciphers)
            except ssl.SSLError:
                raise TLSFileError(f"{self.names.ciphers}={self.ciphers!r} names no cipher "
                                   f"OpenSSL knows") from None
        fields = ("ca", "ca_path")
        try:
            if self.ca or self.ca_path:
                context.load_verify_locations(cafile=self.ca, capath=self.ca_path)
            fields = ("cert", "key")
            if self.cert:
                context.load_cert_chain(self.cert, self.key,
                                        self.key_password or self._no_key_password)
            return context
        except ssl.SSLError as exc:  # read, but not a usable certificate or key
            why = ("the key does not belong to the certificate"
                   if exc.reason == "KEY_VALUES_MISMATCH" else
                   "not a PEM certificate and key, or the key password is wrong"
                   if "cert" in fields else f"not PEM certificates ({exc.reason or exc})")
        except OSError as exc:
            why = exc.strerror or str(exc)
        shown = ", ".join(f"{getattr(self.names, name)}={getattr(self, name)}"
                          for name in fields if getattr(self, name))
        raise TLSFileError(f"cannot use the TLS files ({shown}): {why}") from None

    def _no_key_password(self) -> str:
        """For an encrypted key without a password: an error, not a question on the tty."""
        raise PermissionError(f"the key is encrypted: give its password "
                              f"({self.names.key_password})")


def client_context(files: TLSFiles, where: str) -> ssl.SSLContext:
    """:meth:`TLSFiles.context`; an unusable file: :class:`BackendUnavailable` at ``where``."""
    try:
        return files.context()
    except TLSFileError as exc:
        raise BackendUnavailable(f"{where}: {exc}") from None


def tls_from_url(url: BackendURL, names: OptionNames, on: bool, needs: str) -> TLSFiles | None:
    """:meth:`TLSFiles.from_url` when TLS is ``on`` (the backend's scheme or flag says so);
    else None, a TLS option being an :class:`InvalidURL` saying TLS ``needs`` it."""
    if on:
        return TLSFiles.from_url(url, names)
    given = [name for name in names if name in url.query]
    if given:
        raise InvalidURL(f"TLS options ({', '.join(given)}) need {needs}: {url}")
    return None


def from_ssl_options(url: BackendURL) -> TLSFiles | None:
    """A ``mysql://`` or ``memcached://`` URL's TLS: on with ``ssl=true`` or an ``ssl_*``."""
    given = any(name in url.query for name in SSL_OPTIONS)
    return tls_from_url(url, SSL_OPTIONS, url.bool_option("ssl", given), "TLS: drop ssl=false")

