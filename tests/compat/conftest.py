"""Fixtures of the compat suite: each backend's URL in the form a tooz user's config holds."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator

import pytest

import conch
from conch.compat.tooz import coordination
from tests.conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    """Each backend's URL in turn, through conch's synchronous API only (the compat layers
    are synchronous; the suite-wide ``url`` also runs the async API as "<name>-async")."""
    return str(request.getfixturevalue(f"{request.param}_url"))


_ETCD3GW_TLS = {"ssl_ca": "ca_cert", "ssl_cert": "cert_cert", "ssl_key": "cert_key"}
"""conch's etcd TLS options → tooz's etcd3gw driver's."""


def as_tooz_url(url: str) -> str:
    """The tooz 9 URL for the same server as conch test URL ``url`` (conch-only schemes,
    such as memory://, stay as they are: get_coordinator takes conch URLs too)."""
    parts = urllib.parse.urlsplit(url)
    scheme, path = parts.scheme, parts.path
    query = dict(urllib.parse.parse_qsl(parts.query))
    if "ttl" in query:  # conch's lease is tooz's lock_timeout
        query["lock_timeout"] = query.pop("ttl")
    if scheme == "rediss":  # tooz asks for TLS with an option; the ssl_* names are redis-py's
        scheme, query["ssl"] = "redis", "true"
    if scheme == "redis" and path.strip("/"):
        query["db"], path = path.strip("/"), ""
    elif scheme in ("etcd", "etcd+https"):
        scheme = "etcd3+https" if scheme == "etcd+https" else "etcd3+http"
        for conch_name, tooz_name in _ETCD3GW_TLS.items():
            if conch_name in query:
                query[tooz_name] = query.pop(conch_name)
    elif scheme == "memcached" and (query.pop("ssl", "") == "true"
                                    or any(name.startswith("ssl_") for name in query)):
        query["use_ssl"] = "true"
        if "ssl_ca" in query:
            query["ca_cert"] = query.pop("ssl_ca")
    elif scheme == "zookeeper":
        scheme = "kazoo"
        if path.strip("/"):
            query["namespace"], path = path.strip("/"), ""
    encoded = urllib.parse.urlencode(query)
    return f"{scheme}://{parts.netloc}{path}{'?' + encoded if encoded else ''}"


@pytest.fixture
def tooz_url(url: str) -> str:
    """The backend under test, as a tooz URL."""
    return as_tooz_url(url)


def _started(url: str, member: bytes) -> Iterator[coordination.CoordinationDriver]:
    coordinator = coordination.get_coordinator(url, member)
    coordinator.start(start_heart=True)
    try:
        yield coordinator
    finally:
        if coordinator.is_started:
            coordinator.stop()


@pytest.fixture
def tooz_coordinator(tooz_url: str) -> Iterator[coordination.CoordinationDriver]:
    """A started coordinator, obtained the way tooz users do."""
    yield from _started(tooz_url, b"conductor-1")


@pytest.fixture
def other_tooz_coordinator(tooz_url: str) -> Iterator[coordination.CoordinationDriver]:
    """A second member of the group (another conductor)."""
    yield from _started(tooz_url, b"conductor-2")


@pytest.fixture(params=BACKENDS)
def group_url(request: pytest.FixtureRequest) -> str:
    """Each backend with groups in turn, as a tooz URL (others are skipped: their groups
    are not written yet)."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    if not conch.Coordinator(url).capabilities.groups:
        pytest.skip(f"the {request.param} backend does not declare groups")
    return as_tooz_url(url)


REAL_TOOZ_GROUPS = ["file", "memcached", "redis", "zookeeper"]
"""The test servers on which the installed tooz has groups (its etcd3gw driver needs the
etcd3gw package, not installed)."""


@pytest.fixture(params=REAL_TOOZ_GROUPS)
def real_tooz_url(request: pytest.FixtureRequest) -> str:
    """A tooz URL for the real tooz, on each backend where it has groups."""
    url = as_tooz_url(str(request.getfixturevalue(f"{request.param}_url")))
    if request.param == "zookeeper":  # tooz takes no credentials in the URL
        url = re.sub(r"//[^@/]*@", "//", url)
    return url
