"""Fixtures of the contract suite (the ``url`` fixture, in tests/conftest.py, picks the backend)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

import conch
from tests.conftest import BACKENDS


@pytest.fixture
def other_coordinator(url: str) -> Iterator[conch.Coordinator]:
    """A second started coordinator on the backend under test: another member of the group."""
    with conch.connect(url) as started:
        yield started


@pytest.fixture(params=BACKENDS)
def sync_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend in turn, for what only the sync API has (groups, elections)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def ours(sync_url: str) -> Iterator[conch.Coordinator]:
    """A started coordinator on the backend under test, for what only the sync API has
    (group tests also ask for ``group_url``, which skips backends without groups)."""
    with conch.connect(sync_url) as started:
        yield started


@pytest.fixture
def theirs(sync_url: str) -> Iterator[conch.Coordinator]:
    """A second one: another member, candidate or holder."""
    with conch.connect(sync_url) as started:
        yield started


def skip_unless_declared(url: str, capability: str) -> None:
    """Skip the test where the backend lacks ``capability`` (after checking that asking for
    it there raises NotSupported)."""
    if not getattr(conch.Coordinator(url).capabilities, capability):
        with pytest.raises(conch.NotSupported, match=capability):
            conch.Coordinator(url, require=[capability])
        pytest.skip(f"the {url.split(':')[0]} backend does not declare {capability}")


def declared_only(capability: str) -> Callable[[str], None]:
    """An autouse fixture (assign it in a module) that skips the module's tests where the
    backend lacks ``capability``."""

    @pytest.fixture(autouse=True)
    def declared(sync_url: str) -> None:
        skip_unless_declared(sync_url, capability)

    return declared


@pytest.fixture
def group_url(sync_url: str) -> str:
    """The URL of each backend that declares groups."""
    if not conch.Coordinator(sync_url).capabilities.groups:
        pytest.skip(f"the {sync_url.split(':')[0]} backend does not declare groups")
    return sync_url


@pytest.fixture
def group_name() -> str:
    """A group name no other test uses (servers are shared by the whole session)."""
    return f"group-{uuid.uuid4().hex}"
