"""Fencing tokens: present while held, strictly increasing across the holders of a name."""

from __future__ import annotations

import itertools

import pytest

import conch


@pytest.fixture
def fencing(coordinator: conch.Coordinator) -> None:
    """Skip a test of token order on a backend that does not declare ``fencing``."""
    if not coordinator.capabilities.fencing:
        pytest.skip("the backend does not declare fencing")


def _hold_once(lock: conch.Lock) -> int:
    assert lock.acquire(blocking=10)
    token = lock.token
    lock.release()
    assert isinstance(token, int), f"a fencing backend gave token {token!r}"
    return token


def _assert_strictly_increasing(tokens: list[int]) -> None:
    for earlier, later in itertools.pairwise(tokens):
        assert later > earlier, f"token {later} after {earlier} in {tokens}"


@pytest.mark.core
@pytest.mark.usefixtures("fencing")
def test_tokens_strictly_increase_across_objects_and_coordinators(
    url: str, coordinator: conch.Coordinator, other_coordinator: conch.Coordinator,
    lock_name: str,
) -> None:
    with conch.connect(url) as third:
        locks = [member.lock(lock_name)
                 for member in (coordinator, other_coordinator, third, coordinator)]
        tokens = [_hold_once(lock) for _ in range(3) for lock in locks]
    _assert_strictly_increasing(tokens)


@pytest.mark.usefixtures("fencing")
def test_tokens_keep_increasing_when_the_same_object_reacquires(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    lock = coordinator.lock(lock_name)
    _assert_strictly_increasing([_hold_once(lock) for _ in range(5)])


@pytest.mark.usefixtures("fencing")
def test_tokens_keep_increasing_after_the_holders_coordinator_restarts(
    url: str, lock_name: str
) -> None:
    tokens = []
    for _ in range(3):
        with conch.connect(url) as member:
            tokens.append(_hold_once(member.lock(lock_name)))
    _assert_strictly_increasing(tokens)


@pytest.mark.usefixtures("fencing")
def test_tokens_of_a_released_name_exceed_those_of_its_earlier_holds_after_other_names(
    coordinator: conch.Coordinator, lock_name: str
) -> None:
    first = _hold_once(coordinator.lock(lock_name))
    for index in range(3):
        _hold_once(coordinator.lock(f"{lock_name}-other-{index}"))
    assert _hold_once(coordinator.lock(lock_name)) > first


def test_token_is_none_when_not_held(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str
) -> None:
    lock = coordinator.lock(lock_name)
    assert lock.token is None
    assert lock.acquire()
    if coordinator.capabilities.fencing:
        assert isinstance(lock.token, int)
    contender = other_coordinator.lock(lock_name)
    assert contender.acquire(blocking=False) is False
    assert contender.token is None, "a failed acquire left a token"
    lock.release()
    assert lock.token is None
