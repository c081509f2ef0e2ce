"""Backend URLs: parsing, redaction, and the scheme registry (scheme → "module:Class").

A URL's password and secret-looking options never appear in ``repr``/``str``, logs or error
text (:meth:`BackendURL.redacted`). :mod:`conch.backends.loader` imports the registered class.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse
from collections.abc import Iterable

from conch.errors import InvalidURL

# Scheme → "module:Class" of conch's own backends, as pyproject.toml declares them in the
# entry-point group (this table serves when conch's metadata is not installed). Imported
# lazily so a backend's client library is only needed by those who use it.
_BUILT_IN: dict[str, str] = {
    "file": "conch.backends.file.backend:FileBackend",
    "memory": "conch.backends.memory.backend:MemoryBackend",
    "redis": "conch.backends.redis.backend:RedisBackend",
    "rediss": "conch.backends.redis.backend:RedisBackend",
    "etcd": "conch.backends.etcd.backend:EtcdBackend",
    "etcd+https": "conch.backends.etcd.backend:EtcdBackend",
    "zookeeper": "conch.backends.zookeeper.backend:ZooKeeperBackend",
    "postgresql": "conch.backends.postgresql.backend:PostgreSQLBackend",
    "postgres": "conch.backends.postgresql.backend:PostgreSQLBackend",
    "mysql": "conch.backends.mysql.backend:MySQLBackend",
    "memcached": "conch.backends.memcached.backend:MemcachedBackend",
}
ENTRY_POINT_GROUP = "conch.backends"
# The registry: the built-in table, then entry points and register_backend() (see _backends).
_BACKENDS: dict[str, str] = dict(_BUILT_IN)
_entry_points_read = False

_SECRET_OPTION = re.compile(r"pass|secret|token|key", re.IGNORECASE)
# Options that name a key *file*: a path, shown so that errors can name it.
_KEY_FILE_OPTIONS = frozenset({"keyfile", "ssl_key", "ssl_keyfile", "cert_key"})
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
# A flag's spellings (oslo.utils' and tooz's, so that tooz URLs keep their meaning).
_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})
log = logging.getLogger("conch")


def register_backend(scheme: str, target: str) -> None:
    """Make ``scheme://`` URLs use the backend class at ``target`` ("module:Class")."""
    _BACKENDS[scheme] = target


def backend_target(scheme: str) -> str:
    """The "module:Class" registered for ``scheme`` (one :func:`parse_url` accepted)."""
    return _backends()[scheme]


def known_schemes() -> list[str]:
    """The schemes :func:`parse_url` accepts."""
    return sorted(_backends())


def _backends() -> dict[str, str]:
    """The registry, with the ``conch.backends`` entry points of installed distributions
    added on first use. An entry point adds a scheme; it never replaces a built-in one or
    one given to :func:`register_backend` (a conflicting one is ignored with a warning)."""
    global _entry_points_read
    if not _entry_points_read:
        import importlib.metadata

        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry_point.dist.name if entry_point.dist else "a distribution"
            _add_entry_point(entry_point.name.lower(), entry_point.value, distribution)
        _entry_points_read = True
    return _BACKENDS


def _add_entry_point(scheme: str, target: str, distribution: str) -> None:
    known = _BACKENDS.get(scheme)
    if known == target:
        return
    if known is not None or not _SCHEME.match(scheme):
        why = "a scheme conch already has" if known else "not a URL scheme"
        log.warning("ignoring the %s entry point %s = %s of %s: %s", ENTRY_POINT_GROUP, scheme,
                    target, distribution, why)
        return
    _BACKENDS[scheme] = target


@dataclasses.dataclass(frozen=True)
class BackendURL:
    """A parsed backend URL. ``hosts`` keeps every ``host:port`` of a comma list."""

    scheme: str
    hosts: tuple[tuple[str, int | None], ...]
    path: str
    query: dict[str, str]
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be shown: the password and secret-looking options."""
        found = [self.password] if self.password else []
        found += [v for k, v in self.query.items() if v and _is_secret(k)]
        return tuple(found)

    def redacted(self) -> str:
        """The URL as it is safe to show, with the password and secrets replaced by ``***``."""
        netloc = ",".join(host if port is None else f"{host}:{port}" for host, port in self.hosts)
        if self.username is not None:
            user = urllib.parse.quote(self.username, safe="")
            netloc = f"{user}{':***' if self.password else ''}@{netloc}"
        query = urllib.parse.urlencode(
            {k: ("***" if v and _is_secret(k) else v) for k, v in self.query.items()}
        )
        return f"{self.scheme}://{netloc}{self.path}{'?' + query if query else ''}"

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        # The generated repr would show secret-looking query options.
        return f"BackendURL({self.redacted()!r})"

    def options(self, known: Iterable[str]) -> dict[str, str]:
        """The query options, after checking each is one of ``known``."""
        known = set(known)
        unknown = sorted(set(self.query) - known)
        if unknown:
            accepted = ", ".join(sorted(known)) or "none"
            raise InvalidURL(
                f"unknown option {', '.join(unknown)} for {self.scheme}:// URLs "
                f"(accepted: {accepted}): {self.redacted()}"
            )
        return dict(self.query)

    def float_option(self, name: str, default: float) -> float:
        """Query option ``name`` as a positive number of seconds (or ``default``)."""
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise InvalidURL(f"option {name} must be a positive number, got {raw!r}")
        return value

    def bool_option(self, name: str, default: bool) -> bool:
        """Query option ``name`` as a yes/no flag (``true``/``false``, ``1``/``0``,
        ``yes``/``no``, ``on``/``off``), or ``default``."""
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise InvalidURL(f"option {name} must be true or false, got {raw!r}")


def _is_secret(option: str) -> bool:
    """Whether query option ``option`` holds a secret: its name says pass, secret, token or
    key, unless it names a key *file* (a path: ``ssl_key_password`` is a secret,
    ``ssl_key`` is not)."""
    return bool(_SECRET_OPTION.search(option)) and option.lower() not in _KEY_FILE_OPTIONS


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for a client library that would log credentials (kazoo logs its auth
    packet at DEBUG): every message is formatted, then each secret replaced by ``***``."""

    def __init__(self, logger: logging.Logger, secrets: tuple[str, ...]) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(secret for secret in secrets if secret)

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        self.logger.log(level, "%s", text, **kwargs)


def parse_url(url: str) -> BackendURL:
    """Parse ``url``; raise :class:`InvalidURL` (without the password) when malformed."""
    if not isinstance(url, str):
        raise InvalidURL(f"a backend URL must be a str, not {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.match(scheme):
        raise InvalidURL(
            f"not a backend URL (expected scheme://...): {_scrub(url)!r}; "
            f"known schemes: {', '.join(known_schemes())}"
        )
    if scheme not in _backends():
        raise InvalidURL(
            f"unknown backend scheme {scheme!r} in {_scrub(url)!r}; "
            f"known schemes: {', '.join(known_schemes())}"
        )
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise InvalidURL(f"malformed URL {_scrub(url)!r}") from None
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_password, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user)
        password = urllib.parse.unquote(secret) if has_password else None
    try:
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True,
                                            strict_parsing=bool(parts.query)))
    except ValueError:
        raise InvalidURL(f"malformed query string in {_scrub(url)!r}") from None
    return BackendURL(
        scheme=scheme,
        hosts=_parse_hosts(netloc, url),
        path=urllib.parse.unquote(parts.path),
        query=query,
        username=username,
        password=password,
    )


def _parse_hosts(netloc: str, url: str) -> tuple[tuple[str, int | None], ...]:
    hosts: list[tuple[str, int | None]] = []
    for item in filter(None, netloc.split(",")):
        host, port = item, None
        match = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d*))?", item)
        if match is None:
            raise InvalidURL(f"malformed host {item!r} in {_scrub(url)!r}")
        host = match.group(1).strip("[]")
        if match.group(2):
            port = int(match.group(2))
            if not 0 < port < 65536:
                raise InvalidURL(f"port {port} out of range in {_scrub(url)!r}")
        elif match.group(2) == "":
            raise InvalidURL(f"empty port in {_scrub(url)!r}")
        hosts.append((host, port))
    return tuple(hosts)


def _scrub(url: str) -> str:
    """Hide the userinfo and secret-looking query values of a URL we could not parse."""
    url = re.sub(r"(://)[^?#]*@", r"\1***@", url)  # up to the last "@": passwords may hold "@"
    return re.sub(rf"([?&][^=&#]*(?:{_SECRET_OPTION.pattern})[^=&#]*=)[^&#]*", r"\1***", url,
                  flags=re.IGNORECASE)
