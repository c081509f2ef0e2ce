"""Fixtures of the conch.aio tests."""

from __future__ import annotations

import pytest

from tests.conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend in turn (these tests use conch.aio directly)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(params=["file", "memory"])
def local_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend without a server (for the tests of the generic layer)."""
    return str(request.getfixturevalue(f"{request.param}_url"))
