"""Shared-lock and semaphore scenarios that the queue backends (etcd://, zookeeper://) check
alike; each backend's test module gives its server's side (an older conch's hold)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import conch
from tests.contract.waiting import HANDOFF_WITH_NOTIFY, Waiter
from tests.servers.base import ServerProcess, wait_until

Server = TypeVar("Server", bound=ServerProcess)


@contextlib.contextmanager
def own_server(start: Callable[[], Server]) -> Iterator[Server]:
    """A server of one test alone (which it may restart), removed after it."""
    server = start()
    try:
        yield server
    finally:
        server.cleanup()


def readers_wake_when_the_older_hold_goes(
    coordinator: conch.Coordinator, name: str, queued: Callable[[], int],
    remove_older: Callable[[], object]
) -> None:
    """With an older conch's exclusive hold queued first (``remove_older`` ends it), shared
    holds wait; its end wakes them all within a notified hand-off. ``queued``: how many
    holds and waits the server has for ``name``."""
    assert coordinator.lock(name, shared=True).acquire(blocking=False) is False
    readers = [Waiter(coordinator.lock(name, shared=True)) for _ in range(2)]
    wait_until(lambda: queued() == 3, 10, "the readers")
    time.sleep(0.3)  # their watches have started
    released = time.monotonic()
    remove_older()
    for reader in readers:  # woken by the watch on the older hold, together
        assert reader.result(5) is True
        assert reader.returned_at - released < HANDOFF_WITH_NOTIFY
        reader.lock.release()


def a_new_reader_waits_behind_an_older_writer(
    coordinator: conch.Coordinator, name: str, queue_older: Callable[[], object]
) -> None:
    """With a shared hold, then an older conch's exclusive wait queued (``queue_older``), a
    new shared hold does not overtake that writer."""
    assert coordinator.describe(name).holder is not None
    queue_older()
    assert coordinator.lock(name, shared=True).acquire(blocking=False) is False, \
        "a new shared hold overtook an older conch's waiting writer"
