"""Checks the contract modules of shared locks and semaphores (and elections) share: a hold
ended by its coordinator's stop, a hold freed when its holder process is killed, and the
sections worker processes recorded."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Sequence
from typing import Protocol

import pytest

import conch
from conch.history import Section, load
from tests.contract import workers
from tests.contract.waiting import dead_holder_bound


class Hold(Protocol):
    """A lock, shared lock or semaphore permit object."""

    @property
    def token(self) -> int | None: ...

    @property
    def lost(self) -> threading.Event: ...

    def acquire(self, blocking: bool | float = True) -> bool: ...

    def release(self) -> None: ...


def assert_stop_ends(coordinator: conch.Coordinator, hold: Hold) -> None:
    """``hold`` (of ``coordinator``) taken, then the coordinator stopped: the hold is lost,
    its release says so, and it cannot be taken again."""
    assert hold.acquire(blocking=False)
    coordinator.stop()
    assert hold.lost.is_set()
    with pytest.raises(conch.LockLost):
        hold.release()
    with pytest.raises(conch.NotStarted):
        hold.acquire(blocking=False)


def taken_after_the_holder_is_killed(url: str, argv: Sequence[str], hold: Hold,
                                     coordinator: conch.Coordinator) -> tuple[int, int | None]:
    """A worker process holds (``argv``: the worker's ``hold`` command); ``hold`` cannot be
    taken until the worker is SIGKILLed, then it is within the backend's bound. The dead
    holder's token and the new hold's."""
    skip_in_one_process(url)
    holder = workers.spawn(url, *argv)
    try:
        dead_token = int(workers.expect(holder, "held "))
        assert hold.acquire(blocking=False) is False
        holder.kill()
        holder.wait()
        assert hold.acquire(blocking=dead_holder_bound(coordinator))
        token = hold.token
        hold.release()
        return dead_token, token
    finally:
        holder.kill()
        holder.communicate()


def skip_in_one_process(url: str, what: str = "holds") -> None:
    """Skip on ``memory://``, whose holds (``what``) live inside one process."""
    if url.startswith("memory:"):
        pytest.skip(f"memory:// {what} live inside one process")


def sections_across_processes(url: str, command: Sequence[str], processes: int,
                              tmp_path: pathlib.Path, what: str = "holds") -> list[Section]:
    """Run ``processes`` workers of ``command`` (a history folder and 3 seconds appended) to
    the end: the sections they recorded, one per hold they reported, more than ``processes``."""
    skip_in_one_process(url, what)
    history = tmp_path / "history"
    history.mkdir()
    taken = workers.run_to_the_end(url, [*command, str(history), "3"], processes)
    sections = load(history)
    assert len(sections) == taken > processes
    return sections
