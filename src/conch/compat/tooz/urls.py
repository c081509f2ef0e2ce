"""tooz backend URLs as conch URLs, so a service's existing ``backend_url`` keeps working.

Each query option a tooz 9 driver reads is translated to conch's, accepted when conch does
that anyway, ignored when it tunes a feature this layer lacks, or rejected with
:class:`conch.InvalidURL` (never showing the URL); other options and conch's own schemes pass
through. README, "Backend URLs" under "Switching from tooz", has the table."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import NamedTuple

from conch.errors import InvalidURL
from conch.url import known_schemes

Options = dict[str, list[str]]


class _Accepted(NamedTuple):
    """The values of an option that mean what conch does anyway."""

    shown: str
    values: frozenset[str]


# The spellings of oslo.utils' bool_from_string, which tooz's drivers use.
_TRUE = _Accepted("true", frozenset({"1", "t", "true", "on", "y", "yes"}))
_FALSE = _Accepted("false", frozenset({"0", "f", "false", "off", "n", "no"}))
_REFUSED = {
    "ipc": "tooz's ipc:// driver has no conch backend: use file:///dir (one host)",
    "kubernetes": "tooz's kubernetes:// driver has no conch backend",
}


@dataclasses.dataclass
class _URL:
    """The parts of a URL being translated."""

    scheme: str
    userinfo: str  # as written, percent-encoded; "" when absent
    hosts: str
    path: str


@dataclasses.dataclass(frozen=True)
class _Dialect:
    """How one tooz driver's URL becomes a conch URL."""

    scheme: str
    lease: tuple[str, ...] = ()
    """tooz options setting how long a lock outlives a dead holder (conch's ``ttl``),
    first present wins."""
    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    accepted: Mapping[str, _Accepted] = dataclasses.field(default_factory=dict)
    """Option → the values meaning what conch does anyway (dropped); others rejected."""
    ignored: frozenset[str] = frozenset()
    unsupported: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Option → why conch cannot honour it."""
    adjust: Callable[[_URL, Options], None] | None = None


def to_conch_url(backend_url: str, overrides: Mapping[str, object] | None = None) -> str:
    """The conch URL for tooz URL ``backend_url``; ``overrides`` replace its query options
    (``get_coordinator(url, member, **options)``). Raises :class:`conch.InvalidURL`."""
    if not isinstance(backend_url, str):
        raise InvalidURL(f"a backend URL must be a str, not {type(backend_url).__name__}")
    try:
        parts = urllib.parse.urlsplit(backend_url)
    except ValueError:
        raise InvalidURL("malformed backend URL (not shown: it may hold a password)") from None
    scheme = parts.scheme.lower()
    options: Options = {}
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        options.setdefault(name, []).append(value)
    for name, given in (overrides or {}).items():
        values = given if isinstance(given, (list, tuple)) else [given]
        options[name] = [str(value) for value in values]
    userinfo, _, hosts = parts.netloc.rpartition("@")
    url = _URL(scheme, userinfo, hosts, parts.path)
    if scheme in _REFUSED:
        raise InvalidURL(_REFUSED[scheme])
    dialect = _DIALECTS.get(scheme)
    if dialect is not None:
        _translate(dialect, url, options)
    elif scheme not in known_schemes():
        raise InvalidURL(
            f"unknown backend scheme {scheme!r}; tooz schemes: {', '.join(sorted(_DIALECTS))}; "
            f"conch schemes: {', '.join(known_schemes())}"
        )
    netloc = f"{url.userinfo}@{url.hosts}" if url.userinfo else url.hosts
    query = urllib.parse.urlencode({name: values[-1] for name, values in options.items()})
    return f"{url.scheme}://{netloc}{url.path}{'?' + query if query else ''}"


def _translate(dialect: _Dialect, url: _URL, options: Options) -> None:
    for name, values in options.items():
        if name in dialect.unsupported:
            raise InvalidURL(f"tooz's {name}= option of {url.scheme}:// URLs is not supported: "
                             f"{dialect.unsupported[name]}; remove it")
        accepted = dialect.accepted.get(name)
        if accepted is not None and values[-1].lower() not in accepted.values:
            raise InvalidURL(f"tooz's {name}= option of {url.scheme}:// URLs can only be "
                             f"{accepted.shown} with conch, got {values[-1]!r}")
    for name in (*dialect.ignored, *dialect.accepted):
        options.pop(name, None)
    leases = [options.pop(name) for name in dialect.lease if name in options]
    if leases:
        if "ttl" in options:
            raise InvalidURL(f"give either tooz's {' / '.join(dialect.lease)} or conch's "
                             f"ttl option, not both")
        options["ttl"] = leases[0]
    for tooz_name, conch_name in dialect.renamed.items():
        if tooz_name in options:
            options[conch_name] = options.pop(tooz_name)
    url.scheme = dialect.scheme
    if dialect.adjust is not None:
        dialect.adjust(url, options)


def _last(options: Options, name: str) -> str | None:
    values = options.pop(name, None)
    return values[-1] if values else None


def _adjust_redis(url: _URL, options: Options) -> None:
    if (_last(options, "ssl") or "false").lower() in _TRUE.values:
        url.scheme = "rediss"
    database = _last(options, "db")
    if database is not None:
        if url.path.strip("/") not in ("", database):
            raise InvalidURL("a redis:// URL's db= option and its path (/db) disagree")
        url.path = f"/{database}"
    if not url.hosts and url.path.strip("/") and not url.path.strip("/").isdigit():
        raise InvalidURL("tooz's redis:///socket/path form (a Unix socket) is not supported "
                         "by conch's redis backend: give host:port")
    fallbacks = options.get("sentinel_fallback")
    if fallbacks:  # tooz repeats the option; conch takes one comma-separated list
        options["sentinel_fallback"] = [",".join(fallbacks)]


def _adjust_mysql(url: _URL, options: Options) -> None:
    for name in [name for name in options if name.startswith("ssl_") and not options[name][-1]]:
        del options[name]  # tooz passes only the ssl_* options with a value
    mode = _last(options, "ssl_verify_mode")
    if mode is not None:  # PyMySQL's spellings, as tooz hands them over
        spelled = {"0": "none", "false": "none", "no": "none",
                   "1": "required", "true": "required", "yes": "required"}
        options["ssl_verify_mode"] = [spelled.get(mode.lower(), mode.lower())]
    elif any(name.startswith("ssl_") for name in options) and not (
            {"ssl_ca", "ssl_capath"} & set(options)):
        # Without a CA tooz's PyMySQL checks no server certificate; conch would check it
        # against the system's CAs: keep tooz's behaviour for its URLs.
        options["ssl_verify_mode"] = ["none"]


def _adjust_memcached(url: _URL, options: Options) -> None:
    use_ssl = (_last(options, "use_ssl") or "false").lower() in _TRUE.values
    tls_options = [name for name in options if name.startswith("ssl_")]
    if not use_ssl:  # tooz reads its TLS options only with use_ssl
        for name in tls_options:
            del options[name]
        return
    options["ssl"] = ["true"]
    options.setdefault("ssl_check_hostname", ["false"])  # tooz's default, unlike conch's


def _adjust_zookeeper(url: _URL, options: Options) -> None:
    for name in _ZOOKEEPER_BOOLEANS:  # as oslo.utils spells them, for conch
        value = _last(options, name)
        if value is None:
            continue
        if value.lower() not in _TRUE.values | _FALSE.values:
            raise InvalidURL(f"tooz's {name}= option of {url.scheme}:// URLs must be true or "
                             f"false, got {value!r}")
        options[name] = ["true" if value.lower() in _TRUE.values else "false"]
    if options.get("use_ssl") == ["false"]:
        options.pop("use_ssl")
        options.pop("verify_certs", None)  # it tunes TLS only
    extra_hosts = options.pop("hosts", [])
    url.hosts = ",".join(filter(None, [url.hosts, *extra_hosts])) or "localhost:2181"
    namespace = _last(options, "namespace")
    if namespace:
        if url.path.strip("/"):
            raise InvalidURL("give a zookeeper:// URL either a path or tooz's namespace= "
                             "option, not both")
        url.path = "/" + namespace.strip("/")


def _adjust_postgresql(url: _URL, options: Options) -> None:
    host, port, dbname = (_last(options, name) for name in ("host", "port", "dbname"))
    if host is not None or port is not None:
        match = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d*))?", url.hosts)
        old_host, old_port = (match.group(1), match.group(2)) if match else (url.hosts, None)
        if host is not None:
            # conch reads a percent-encoded host as a Unix socket directory, as libpq does.
            old_host = urllib.parse.quote(host, safe="") if host.startswith("/") else (
                f"[{host}]" if ":" in host else host)
        port = port if port is not None else old_port
        url.hosts = f"{old_host}:{port}" if port else old_host
    if dbname is not None:
        url.path = f"/{dbname}"


_ZOOKEEPER_BOOLEANS = ("use_ssl", "verify_certs")
_CLIENT = "conch's {backend} client manages its connections itself"
_GROUPS = frozenset({"membership_timeout", "leader_timeout"})
_DIALECTS: dict[str, _Dialect] = {
    "file": _Dialect("file", ignored=frozenset({"timeout"})),
    "redis": _Dialect(
        "redis",
        lease=("lock_timeout", "timeout"),
        renamed={"socket_connect_timeout": "connect_timeout"},
        accepted={"encoding": _Accepted("utf8", frozenset({"utf8", "utf-8"}))},
        ignored=_GROUPS,
        unsupported={
            **dict.fromkeys(("retry_on_timeout", "socket_keepalive", "health_check_interval"),
                            _CLIENT.format(backend="redis")),
            "namespace": "conch keys every lock by the SHA-256 of its name; keep deployments "
                         "apart with a database number (/1) or a lock-name prefix",
        },
        adjust=_adjust_redis,
    ),
    "etcd3+http": _Dialect(
        "etcd",
        lease=("lock_timeout", "timeout"),
        renamed={"ca_cert": "ssl_ca", "cert_cert": "ssl_cert", "cert_key": "ssl_key"},
        accepted={"api_version": _Accepted("v3", frozenset({"v3"}))},
        ignored=_GROUPS,
    ),
    "memcached": _Dialect(
        "memcached",
        lease=("lock_timeout", "timeout"),
        renamed={"ca_cert": "ssl_ca", "ssl_ciphers": "ssl_cipher"},
        ignored=_GROUPS,
        unsupported={"max_pool_size": _CLIENT.format(backend="memcached")},
        adjust=_adjust_memcached,
    ),
    "mysql": _Dialect("mysql", adjust=_adjust_mysql),
    "postgresql": _Dialect("postgresql", adjust=_adjust_postgresql),
}
_DIALECTS["etcd3+https"] = dataclasses.replace(_DIALECTS["etcd3+http"], scheme="etcd+https")
# ca, certfile, keyfile, keyfile_password: conch's zookeeper:// takes kazoo's names as they are.
_DIALECTS["kazoo"] = _DIALECTS["zookeeper"] = _Dialect(
    "zookeeper",
    accepted={"randomize_hosts": _TRUE},
    unsupported={
        **dict.fromkeys(("connection_retry", "command_retry"),
                        "conch's ZooKeeper session retries by itself"),
        "handler": "conch uses kazoo's threading handler",
    },
    adjust=_adjust_zookeeper,
)
