"""The coordinator's life: start, stop (which ends every hold), identity, and its repr."""

from __future__ import annotations

import time
import urllib.parse
import uuid

import pytest

import conch
from conch.url import parse_url
from tests.servers.base import free_port

CONNECT_BOUND = 15.0
"""Seconds within which an unreachable server is reported (connect timeouts are bounded)."""


def test_connect_returns_a_started_coordinator(url: str) -> None:
    coordinator = conch.connect(url)
    try:
        assert coordinator.is_started
        assert "started" in repr(coordinator)
    finally:
        coordinator.stop()
    assert not coordinator.is_started


def test_connect_as_a_context_manager_stops_on_exit(url: str, lock_name: str) -> None:
    with conch.connect(url) as coordinator:
        assert coordinator.is_started
        with coordinator.lock(lock_name):
            pass
    assert not coordinator.is_started
    with pytest.raises(conch.NotStarted):
        coordinator.lock(lock_name)


def test_lock_before_start_raises_not_started(url: str, lock_name: str) -> None:
    coordinator = conch.Coordinator(url)
    assert not coordinator.is_started
    with pytest.raises(conch.NotStarted, match="start"):
        coordinator.lock(lock_name)


def test_start_and_stop_are_idempotent_and_a_stopped_coordinator_can_start_again(
    url: str, lock_name: str
) -> None:
    coordinator = conch.Coordinator(url)
    assert coordinator.start() is coordinator
    assert coordinator.start() is coordinator
    coordinator.stop()
    coordinator.stop()
    with coordinator, coordinator.lock(lock_name) as lock:
        assert lock.held
    assert not coordinator.is_started


@pytest.mark.core
def test_stop_while_holding_reports_the_hold_lost_and_frees_the_lock(
    url: str, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    coordinator = conch.connect(url)
    lock = coordinator.lock(lock_name)
    assert lock.acquire()
    coordinator.stop()
    assert lock.lost.is_set()
    assert not lock.held and lock.token is None
    with pytest.raises(conch.LockLost):
        lock.release()
    with pytest.raises(conch.LockNotHeld):
        lock.release()
    contender = other_coordinator.lock(lock_name)
    assert contender.acquire(blocking=5), "the stopped coordinator's lock was not freed"
    contender.release()


def test_leaving_with_raises_lock_lost_when_the_coordinator_stopped_inside(
    url: str, lock_name: str
) -> None:
    coordinator = conch.connect(url)
    with pytest.raises(conch.LockLost), coordinator.lock(lock_name) as lock:
        coordinator.stop()
        assert lock.lost.is_set()


def test_get_lock_is_an_alias_of_lock(coordinator: conch.Coordinator, lock_name: str) -> None:
    with coordinator.get_lock(lock_name) as lock:
        assert lock.held
        assert coordinator.lock(lock_name).acquire(blocking=False) is False


def test_member_id_is_the_prefix_and_the_given_id(url: str) -> None:
    assert conch.Coordinator(url, member_id="conductor-1", prefix="nova-").member_id \
        == "nova-conductor-1"
    assert conch.Coordinator(url, member_id="conductor-1").member_id == "conductor-1"


def test_member_id_defaults_to_a_prefixed_random_uuid(url: str) -> None:
    first = conch.Coordinator(url, prefix="nova-").member_id
    second = conch.Coordinator(url, prefix="nova-").member_id
    assert first.startswith("nova-") and second.startswith("nova-")
    assert uuid.UUID(first.removeprefix("nova-")) != uuid.UUID(second.removeprefix("nova-"))


@pytest.mark.core
def test_repr_and_url_never_show_the_password(url: str, coordinator: conch.Coordinator) -> None:
    password = parse_url(url).password
    if not password:
        pytest.skip("the backend's URL has no password")
    for shown in (repr(coordinator), str(coordinator), coordinator.url,
                  repr(conch.Coordinator(url))):
        assert password not in shown
    assert "***" in coordinator.url


def test_unreachable_server_raises_backend_unavailable_promptly_without_the_password(
    url: str, lock_name: str
) -> None:
    parsed = parse_url(url)
    if not any(port for _, port in parsed.hosts):
        pytest.skip("the backend has no server address")
    parts = urllib.parse.urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    nobody = parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{free_port()}").geturl()
    started = time.monotonic()
    # A backend that connects lazily may only fail at the first lock.
    with pytest.raises(conch.BackendUnavailable) as raised, conch.connect(nobody) as coordinator:
        coordinator.lock(lock_name).acquire(blocking=False)
    assert time.monotonic() - started < CONNECT_BOUND
    if parsed.password:
        assert parsed.password not in str(raised.value)
