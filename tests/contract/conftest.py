"""Fixtures of the contract suite (the ``url`` fixture, in tests/conftest.py, picks the backend)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import conch


@pytest.fixture
def other_coordinator(url: str) -> Iterator[conch.Coordinator]:
    """A second started coordinator on the backend under test: another member of the group."""
    with conch.connect(url) as started:
        yield started
