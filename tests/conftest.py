"""Fixtures shared by every suite: backend URLs, unique lock names."""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Iterator

import pytest

import conch
import conch.metrics
from tests.tls import PKI, make_pki

SERVERS_DIR = pathlib.Path(__file__).parent / "servers"

# Every backend of the contract suite: the embedded ones and one per server
# module in tests/servers/ (each provides a ``<name>_url`` fixture).
SERVER_BACKENDS = sorted(
    path.stem for path in SERVERS_DIR.glob("*.py") if path.stem not in {"__init__", "base"}
)
BACKENDS = ["file", "memory", *SERVER_BACKENDS]
pytest_plugins = [f"tests.servers.{name}" for name in SERVER_BACKENDS]


@pytest.fixture
def fresh_metric_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's lock labels count afresh against ``conch.metrics.MAX_LABELS``: past it a
    process reports ``other``, and the tests of a run share one process."""
    monkeypatch.setattr(conch.metrics, "_labels", set())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """One throwaway CA with server, client and stranger certificates for the whole run."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def file_url(tmp_path: pathlib.Path) -> str:
    """A fresh lock directory."""
    return f"file://{tmp_path / 'locks'}"


@pytest.fixture
def memory_url() -> str:
    """A fresh in-process store."""
    return f"memory://test-{uuid.uuid4().hex}"


# The contract suite runs through conch.aio too (seen through the sync API by
# tests/aio/sync_view.py), as backend "<name>-async": on these backends unless
# CONCH_ASYNC_CONTRACT names others ("all", or a comma-separated list). The default
# covers the native asyncio backends and, with mysql, conch.aio's thread path.
_ASYNC_CHOICE = os.environ.get("CONCH_ASYNC_CONTRACT", "file,memory,redis,postgresql,mysql")
ASYNC_BACKENDS = [name for name in BACKENDS
                  if _ASYNC_CHOICE == "all" or name in _ASYNC_CHOICE.split(",")]


# The contract's core also runs over TLS, as backend "<name>-tls" (its ``<name>_tls_url``
# fixture: the server's TLS port, the test CA and a client certificate): only the tests
# marked ``core`` (see pytest_collection_modifyitems).
TLS_BACKENDS = ["redis", "mysql", "memcached", "etcd", "zookeeper"]


@pytest.fixture(params=[*BACKENDS, *(f"{name}-async" for name in ASYNC_BACKENDS),
                        *(f"{name}-tls" for name in TLS_BACKENDS)])
def url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of each backend in turn (through the async API for ``<name>-async``, over
    TLS for ``<name>-tls``)."""
    name = str(request.param)
    if name.endswith("-async"):
        from tests.aio.sync_view import use_async_api

        use_async_api(monkeypatch)
        name = name.removesuffix("-async")
    return str(request.getfixturevalue(f"{name.replace('-', '_')}_url"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Over TLS only the contract's core runs: TLS changes how a backend connects, which
    every core case exercises, not what it does with the connection."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        over_tls = callspec is not None and str(callspec.params.get("url", "")).endswith("-tls")
        (dropped if over_tls and item.get_closest_marker("core") is None else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def backend(url: str) -> str:
    """The scheme of the backend under test."""
    return url.split("://", 1)[0]


@pytest.fixture
def lock_name() -> str:
    """A lock name no other test uses (servers are shared by the whole session)."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def coordinator(url: str) -> Iterator[conch.Coordinator]:
    """A started coordinator on the backend under test."""
    with conch.connect(url) as started:
        yield started
