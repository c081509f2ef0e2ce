"""Shared locks and semaphores on the queue backends (etcd://, zookeeper://), beyond the
contract suite: a permit waiter woken by any holder's release, semaphores apart from the
locks, both over TLS."""

from __future__ import annotations

import time

import pytest

import conch
from tests.contract.waiting import HANDOFF_WITH_NOTIFY, Waiter

QUEUE_BACKENDS = ["etcd", "zookeeper"]


@pytest.fixture(params=QUEUE_BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(params=QUEUE_BACKENDS)
def tls_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_tls_url"))


def test_a_permit_waiter_is_woken_by_whichever_holder_releases(url: str, lock_name: str) -> None:
    with conch.connect(url) as coordinator:
        oldest, youngest = coordinator.semaphore(lock_name, 2), coordinator.semaphore(lock_name, 2)
        assert oldest.acquire(blocking=False) and youngest.acquire(blocking=False)
        waiting = coordinator.semaphore(lock_name, 2)
        waiter = Waiter(waiting)
        time.sleep(0.5)  # its watch has started
        released = time.monotonic()
        youngest.release()  # not the oldest: the waiter does not watch only the first
        assert waiter.result(5) is True
        assert waiter.returned_at - released < HANDOFF_WITH_NOTIFY
        waiting.release()
        oldest.release()


def test_semaphores_and_locks_of_one_name_live_apart(url: str, lock_name: str) -> None:
    """A lock and a semaphore of one name are held at once; only the lock is listed."""
    with conch.connect(url) as coordinator, coordinator.lock(lock_name), \
            coordinator.semaphore(lock_name, 1):
        assert [info.name for info in coordinator.holders()] == [lock_name]


def test_shared_holds_and_permits_over_tls(tls_url: str, lock_name: str) -> None:
    """Shared holds coexist and keep a writer out; two permits of two keep a third out."""
    with conch.connect(tls_url) as coordinator:
        with coordinator.lock(lock_name, shared=True), coordinator.lock(lock_name, shared=True):
            assert coordinator.lock(lock_name).acquire(blocking=False) is False
        with coordinator.semaphore(lock_name, 2), coordinator.semaphore(lock_name, 2):
            assert coordinator.semaphore(lock_name, 2).acquire(blocking=0.2) is False
