"""``file://`` shared locks and semaphores beyond the contract: a fleet with older conch
processes (whose exclusive holds are a bare ``flock`` of the lock file), writer preference
with a kernel wait, tokens from the name's counter, waiters woken by inotify, the
semaphores' own directory, its removal, and the sweep of gates and slots."""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import statistics
import time
from collections.abc import Iterator

import pytest

import conch
from conch.backends.file.semaphore import SEMAPHORES
from conch.backends.file.session import stored_token
from tests.backends import hold_cases
from tests.backends.file_helpers import handoff_delays, hold_once, lock_file_name
from tests.contract.waiting import Waiter
from tests.servers.base import wait_until


@pytest.fixture
def directory(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "locks"


@pytest.fixture
def coordinator(directory: pathlib.Path) -> Iterator[conch.Coordinator]:
    with conch.connect(f"file://{directory}") as started:
        yield started


def old_exclusive_hold(directory: pathlib.Path, name: bytes) -> int | None:
    """A hold as released conch versions take it: ``LOCK_EX`` on the name's lock file,
    opened to read and write; the descriptor, or ``None`` while held elsewhere."""
    fd = os.open(directory / lock_file_name(name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def test_an_old_exclusive_holder_and_a_shared_hold_exclude_each_other(
    coordinator: conch.Coordinator, directory: pathlib.Path
) -> None:
    old = old_exclusive_hold(directory, b"mixed")
    assert old is not None
    shared = coordinator.lock("mixed", shared=True)
    assert shared.acquire(blocking=False) is False
    waiter = Waiter(shared, 10)
    time.sleep(0.1)
    os.close(old)  # the old holder's release: its close wakes the shared waiter
    assert waiter.result(2) is True
    assert old_exclusive_hold(directory, b"mixed") is None
    shared.release()
    old = old_exclusive_hold(directory, b"mixed")
    assert old is not None
    os.close(old)


def test_a_forever_exclusive_waiter_holds_back_new_shared_holds(
    coordinator: conch.Coordinator,
) -> None:
    reading = coordinator.lock("queue", shared=True)
    assert reading.acquire()
    writer = Waiter(coordinator.lock("queue"), True)  # the kernel wait, behind the gate
    time.sleep(0.2)
    late = coordinator.lock("queue", shared=True)
    assert late.acquire(blocking=False) is False
    assert late.acquire(blocking=0.2) is False
    reading.release()
    assert writer.result(2) is True
    writer.lock.release()
    assert late.acquire(blocking=2)
    late.release()


def test_every_hold_draws_from_the_name_token_counter(
    coordinator: conch.Coordinator, directory: pathlib.Path
) -> None:
    first = hold_once(coordinator.lock("counted"))
    readers = [coordinator.lock("counted", shared=True) for _ in range(3)]
    for reader in readers:
        assert reader.acquire(blocking=False)
    tokens = [reader.token or 0 for reader in readers]
    assert tokens == sorted(tokens) and tokens[0] == first + 1 and len(set(tokens)) == 3
    for reader in readers:
        reader.release()
    last = hold_once(coordinator.lock("counted"))
    assert last == first + 4
    fd = os.open(directory / lock_file_name(b"counted"), os.O_RDONLY)
    try:
        assert stored_token(fd) == last  # where an older conch draws its next one from
    finally:
        os.close(fd)


def test_shared_and_exclusive_waiters_are_woken_by_the_release(
    coordinator: conch.Coordinator,
) -> None:
    writer = coordinator.lock("woken")
    assert writer.acquire()
    delays = handoff_delays(writer, coordinator.lock("woken", shared=True), 10)
    assert statistics.median(delays) < 0.01, f"hand-offs took {sorted(delays)}"


def test_a_semaphore_waiter_is_woken_by_a_release(coordinator: conch.Coordinator) -> None:
    holder = coordinator.semaphore("builds", 1)
    assert holder.acquire()
    delays = handoff_delays(holder, coordinator.semaphore("builds", 1), 10)
    assert statistics.median(delays) < 0.01, f"hand-offs took {sorted(delays)}"


def test_semaphores_live_in_a_directory_apart_from_the_locks(directory: pathlib.Path) -> None:
    hold_cases.a_permit_and_a_lock_of_one_name_are_apart(f"file://{directory}", "apart")
    semaphore_files = os.listdir(directory / SEMAPHORES)
    assert lock_file_name(b"apart") not in semaphore_files
    assert any(name.startswith("apart.") for name in semaphore_files)


def test_a_removed_semaphore_directory_reports_the_permit_lost(
    coordinator: conch.Coordinator, directory: pathlib.Path
) -> None:
    permit = coordinator.semaphore("wiped", 1)
    assert permit.acquire()
    token = permit.token
    assert token is not None
    shutil.rmtree(directory / SEMAPHORES)
    assert permit.lost.wait(2)
    with pytest.raises(conch.LockLost):
        permit.release()
    successor = coordinator.semaphore("wiped", 1)
    assert successor.acquire(blocking=False)
    assert successor.token is not None and successor.token > token
    successor.release()


def test_a_limit_is_refused_while_held_and_forgotten_once_free(directory: pathlib.Path) -> None:
    hold_cases.another_limit_is_refused_while_held(f"file://{directory}", "resized")


def test_sweep_removes_idle_gates_and_slots_and_tokens_keep_increasing(
    directory: pathlib.Path,
) -> None:
    with conch.connect(f"file://{directory}?sweep_after=0.05") as coordinator:
        first_shared = hold_once(coordinator.lock("idle", shared=True))
        first_permit = hold_once(coordinator.semaphore("idle", 2))
        time.sleep(0.1)
        hold_once(coordinator.lock("trigger"))  # releases start the sweeps that are due
        hold_once(coordinator.semaphore("trigger", 1))

        def swept() -> bool:
            names = os.listdir(directory) + os.listdir(directory / SEMAPHORES)
            return not any(name.startswith("idle.") and name.endswith((".gate", ".lock"))
                           for name in names)

        wait_until(swept, 5, "the sweep of the idle gate, lock and slot files")
        assert hold_once(coordinator.lock("idle", shared=True)) > first_shared
        assert hold_once(coordinator.semaphore("idle", 2)) > first_permit


@pytest.mark.parametrize("kind", ["shared", "permit"])
def test_stop_ends_a_forever_shared_or_permit_wait(directory: pathlib.Path, kind: str) -> None:
    hold_cases.stop_ends_a_wait(f"file://{directory}", lambda coordinator: (
        coordinator.lock("stopped") if kind == "shared"
        else coordinator.semaphore("stopped", 1)), lambda coordinator: (
        coordinator.lock("stopped", shared=True) if kind == "shared"
        else coordinator.semaphore("stopped", 1)))
