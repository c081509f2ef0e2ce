"""Fixtures of the eventlet suite: every backend's URL, with short leases and sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import BACKENDS, TLS_BACKENDS
from tests.eventlet.driving import GreenWorker

ZOOKEEPER_SESSION = 4
"""zookeeper://'s session timeout here (the server's minimum, two ticks): a killed holder's
znode goes within it, and a renewed session must outlive it."""


@pytest.fixture(params=[*BACKENDS, *(f"{name}-tls" for name in TLS_BACKENDS)])
def url(request: pytest.FixtureRequest) -> str:
    """Each backend's URL in turn (through the sync API: the one eventlet services use), and
    over TLS (``<name>-tls``) for the tests marked ``core``, as in the contract suite."""
    name = str(request.param)
    url = str(request.getfixturevalue(f"{name.replace('-', '_')}_url"))
    if name.startswith("zookeeper"):
        url += f"{'&' if '?' in url else '?'}timeout={ZOOKEEPER_SESSION}"
    return url


@pytest.fixture
def green_workers(url: str) -> Iterator[Callable[[int], list[GreenWorker]]]:
    """Start that many green worker processes on the backend under test, all at once (each
    ready when returned); all killed at the end."""
    started: list[GreenWorker] = []

    def start(count: int) -> list[GreenWorker]:
        workers = [GreenWorker(url) for _ in range(count)]
        started.extend(workers)
        for worker in workers:
            worker.ready()
        return workers

    yield start
    for worker in started:
        worker.close()
