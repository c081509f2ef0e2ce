"""The backend class registered for a URL's scheme (:mod:`conch.url` keeps the registry),
imported on first use so that a backend's client library is needed only by its users."""

from __future__ import annotations

import importlib

from conch.backends.base import Backend
from conch.errors import InvalidURL
from conch.url import BackendURL, backend_target

# Scheme → the client library its backend imports (top-level package) and the extra of
# conch that installs it.
CLIENT_LIBRARIES: dict[str, tuple[str, str]] = {
    "redis": ("redis", "redis"),
    "rediss": ("redis", "redis"),
    "etcd": ("urllib3", "etcd"),
    "zookeeper": ("kazoo", "zookeeper"),
    "postgresql": ("psycopg", "postgresql"),
    "postgres": ("psycopg", "postgresql"),
    "mysql": ("pymysql", "mysql"),
    "memcached": ("pymemcache", "memcached"),
}


def backend_class(url: BackendURL) -> type[Backend]:
    """The backend class registered for ``url``'s scheme.

    Raises :class:`InvalidURL` saying what to install when the backend's client library is
    missing, or when the registered name is not a backend class; any other import failure
    (a missing module of something else, a name a module lacks, as under eventlet's
    monkey-patching) is re-raised as it is.
    """
    target = backend_target(url.scheme)
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ModuleNotFoundError as exc:
        library, extra = CLIENT_LIBRARIES.get(url.scheme, ("", ""))
        if not library or (exc.name or "").split(".")[0] != library:
            raise
        raise InvalidURL(f"the {url.scheme}:// backend needs the client library {library}, "
                         f"which is not installed: install conch[{extra}]") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InvalidURL(f"{target}, registered for {url.scheme}:// URLs, is not a backend class")
    return cls
