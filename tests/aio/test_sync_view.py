"""The view the contract suite uses to run through conch.aio really goes through it."""

from __future__ import annotations

import pytest

import conch
from tests.aio.sync_view import SyncLockView, SyncView, use_async_api


def test_use_async_api_routes_connect_and_coordinator_to_the_async_api(
    monkeypatch: pytest.MonkeyPatch, memory_url: str, lock_name: str
) -> None:
    use_async_api(monkeypatch)
    with conch.connect(memory_url) as coordinator:
        assert isinstance(coordinator, SyncView)
        assert isinstance(conch.Coordinator(memory_url), SyncView)
        lock = coordinator.lock(lock_name)
        assert isinstance(lock, SyncLockView)
        with lock as entered:
            assert entered is lock and lock.held
            assert "conch.aio.AsyncLock" in repr(lock.aio)
        coordinator.stop()
        assert not coordinator.is_started
