"""Fixtures of the conch.aio tests."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

import conch.aio
from conch.backends.memory.backend import MemoryBackend
from tests.conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend in turn (these tests use conch.aio directly)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(params=["file", "memory", "memory-threads"])
def local_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of each backend without a server (for the tests of the queue of waiters)."""
    return backend_url(request, str(request.param), monkeypatch)


def backend_url(request: pytest.FixtureRequest, name: str,
                monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of backend ``name`` for the test ``request``ing it.

    ``memory-threads`` is ``memory://`` without its native asyncio support, so that
    these tests also cover the thread path that the server backends without one take.
    """
    backend = name.removesuffix("-threads")
    if name.endswith("-threads"):
        threads_only = dataclasses.replace(MemoryBackend.capabilities, native_async=False)
        monkeypatch.setattr(MemoryBackend, "capabilities", threads_only)
    return str(request.getfixturevalue(f"{backend}_url"))


@contextlib.asynccontextmanager
async def held_elsewhere(
    url: str, name: str
) -> AsyncIterator[tuple[conch.aio.AsyncCoordinator, conch.aio.AsyncLock]]:
    """A started coordinator, with lock ``name`` held by another member (its lock object)."""
    async with await conch.aio.connect(url) as coordinator, \
            await conch.aio.connect(url) as other:
        holder = other.lock(name)
        assert await holder.acquire()
        yield coordinator, holder
