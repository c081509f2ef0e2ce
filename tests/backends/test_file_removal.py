"""``file://`` when the lock directory is removed under running processes (issue 12 §3).

systemd-tmpfiles, an operator or a test fixture may remove the directory while a
service keeps its coordinator started. The next acquire creates it again, tokens keep
increasing, a hold whose file went is reported lost, and waiters keep waiting.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import struct
import threading
import time

import pytest

import conch
import conch.aio
from conch.backends.file import inotify
from conch.backends.file.session import HIGH_WATER_FILE
from conch.history import load, violations
from tests.backends import file_helpers
from tests.backends.file_helpers import HOLDER, hold_once, lock_file_name
from tests.contract import workers
from tests.contract.waiting import HANDOFF_WITH_NOTIFY, Waiter

NAME = "vnf-42"
TOLD_WITHIN = 2.0
"""Seconds from the removal to ``lock.lost`` (about a millisecond unloaded)."""

_WAITER = """
import sys
import conch
with conch.connect(sys.argv[1]) as coordinator:
    lock = coordinator.lock(sys.argv[2])
    blocking = True if sys.argv[3] == "forever" else float(sys.argv[3])
    print("acquired" if lock.acquire(blocking) else "timed-out", lock.token, flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
"""


@pytest.fixture
def directory(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "locks"


def test_a_directory_removed_between_holds_is_created_again_with_larger_tokens(
    directory: pathlib.Path,
) -> None:
    with conch.connect(f"file://{directory}") as coordinator:
        lock = coordinator.lock(NAME)
        tokens = [hold_once(lock)]
        for _ in range(3):
            shutil.rmtree(directory)
            tokens.append(hold_once(lock))
            assert (directory / lock_file_name(NAME.encode())).exists()
        assert tokens == sorted(set(tokens)), f"tokens {tokens} do not strictly increase"
        assert hold_once(coordinator.lock("a-new-name")) > tokens[-1]
        assert (directory / HIGH_WATER_FILE).exists()


def test_a_removed_mark_file_is_created_again_with_the_mark_it_had(
    directory: pathlib.Path,
) -> None:
    """Tokens above the clock (issued faster than a million a second, or before the
    clock went back) are carried into the new mark file by the process that had the
    old one open."""
    with conch.connect(f"file://{directory}") as coordinator:
        hold_once(coordinator.lock(NAME))
        above_the_clock = time.time_ns() // 1000 + 10**12
        (directory / HIGH_WATER_FILE).write_bytes(struct.pack("<Q", above_the_clock))
        (directory / HIGH_WATER_FILE).unlink()
        assert hold_once(coordinator.lock("a-new-name")) > above_the_clock
        assert (directory / HIGH_WATER_FILE).exists()


@pytest.mark.parametrize("how", ["directory", "file", "renamed directory"])
def test_a_hold_whose_file_is_removed_is_reported_lost_at_once(
    directory: pathlib.Path, how: str
) -> None:
    with conch.connect(f"file://{directory}") as coordinator:
        holder = coordinator.lock(NAME)
        assert holder.acquire()
        held_token = holder.token
        assert held_token is not None
        removed_at = time.monotonic()
        if how == "directory":
            shutil.rmtree(directory)
        elif how == "file":
            (directory / lock_file_name(NAME.encode())).unlink()
        else:
            directory.rename(directory.with_name("old-locks"))
        assert holder.lost.wait(TOLD_WITHIN), "the holder was not told"
        assert time.monotonic() - removed_at < TOLD_WITHIN
        assert not holder.held
        newcomer = coordinator.lock(NAME)
        assert newcomer.acquire(blocking=False), "the new file at the path is free"
        assert newcomer.token is not None and newcomer.token > held_token
        with pytest.raises(conch.LockLost):
            holder.release()
        time.sleep(0.1)
        assert not newcomer.lost.is_set(), "the removal of the old file reached the new hold"
        newcomer.release()


def test_an_async_hold_whose_directory_is_removed_is_told_on_its_event_loop(
    directory: pathlib.Path,
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(f"file://{directory}") as coordinator:
            lock = coordinator.lock(NAME)
            assert await lock.acquire()
            shutil.rmtree(directory)
            await asyncio.wait_for(lock.lost.wait(), TOLD_WITHIN)
            with pytest.raises(conch.LockLost):
                await lock.release()

    asyncio.run(main())


def test_a_release_before_the_watcher_noticed_still_raises_lock_lost(
    directory: pathlib.Path,
) -> None:
    with conch.connect(f"file://{directory}") as coordinator:
        for _ in range(20):  # the release races the watcher thread: both must say lost
            holder = coordinator.lock(NAME)
            assert holder.acquire()
            (directory / lock_file_name(NAME.encode())).unlink()
            with pytest.raises(conch.LockLost):
                holder.release()


@pytest.mark.parametrize("statx", [True, False], ids=["statx", "fstat"])
def test_a_lock_files_link_count_reads_alike_through_statx_and_fstat(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, statx: bool
) -> None:
    if statx:
        assert inotify._statx is not None, "glibc has had statx since 2.28"
    else:
        monkeypatch.setattr(inotify, "_statx", None)
    buffer = inotify.statx_buffer()
    path = tmp_path / "some.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        assert inotify.linked(fd, buffer)
        os.link(path, tmp_path / "other.lock")
        path.unlink()
        assert inotify.linked(fd, buffer), "still linked by its other name"
        (tmp_path / "other.lock").unlink()
        assert not inotify.linked(fd, buffer)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        inotify.linked(fd, buffer)


@pytest.mark.parametrize("blocking", [True, 30.0], ids=["forever", "timed"])
def test_a_waiter_on_a_renamed_directory_takes_the_lock_file_at_the_path(
    directory: pathlib.Path, blocking: bool | float
) -> None:
    """A renamed directory keeps its files linked: the waiter, once the old holder lets
    go of the renamed file, must take the file at the path, not the renamed one."""
    with conch.connect(f"file://{directory}") as coordinator:
        holder = coordinator.lock(NAME)
        assert holder.acquire()
        waiter = Waiter(coordinator.lock(NAME), blocking)
        time.sleep(0.2)
        directory.rename(directory.with_name("old-locks"))
        assert holder.lost.wait(TOLD_WITHIN), "the holder was not told"
        with pytest.raises(conch.LockLost):
            holder.release()
        assert waiter.result(timeout=10) is True
        assert (directory / lock_file_name(NAME.encode())).exists()
        time.sleep(0.1)
        assert not waiter.lock.lost.is_set(), "the waiter took the renamed file"
        waiter.lock.release()


@pytest.mark.parametrize("blocking", ["forever", "30"])
def test_waiters_survive_the_removal_of_the_directory_under_a_held_lock(
    directory: pathlib.Path, blocking: str
) -> None:
    url = f"file://{directory}"
    holder = file_helpers.run(HOLDER, url, NAME)
    waiter = None
    try:
        held_token = int(workers.expect(holder, "held "))
        waiter = file_helpers.run(_WAITER, url, NAME, blocking)
        time.sleep(0.5)
        assert waiter.poll() is None and not file_helpers.said_anything(waiter), "waiter returned"
        shutil.rmtree(directory)
        workers.expect(holder, "lost", timeout=TOLD_WITHIN + 5)
        with conch.connect(url) as coordinator:
            newcomer = coordinator.lock(NAME)
            assert newcomer.acquire(blocking=False), "the new file at the path is free"
            assert newcomer.token is not None and newcomer.token > held_token
            file_helpers.tell(holder, "release")
            workers.expect(holder, "LockLost")
            workers.finish(holder)
            time.sleep(0.5)  # the waiter moves from the removed file to the new one
            assert waiter.poll() is None and not file_helpers.said_anything(waiter), \
                "the waiter took the lock the newcomer holds, or died"
            newcomer_token = newcomer.token
            released_at = time.monotonic()
            newcomer.release()
            waiter_token = int(workers.expect(waiter, "acquired "))
            assert time.monotonic() - released_at < HANDOFF_WITH_NOTIFY
            assert waiter_token > newcomer_token
        file_helpers.tell(waiter, "release")
        workers.expect(waiter, "released")
        workers.finish(waiter)
    finally:
        file_helpers.stop(holder, waiter)



_CONTENDER = """
import sys, threading, time
import conch
from conch.history import Recorder, Section
url, name, history, seconds = sys.argv[1:]

errors = []

def contend(coordinator, index):
    try:
        take_in_turn(coordinator, index)
    except BaseException as exc:
        errors.append(repr(exc))

def take_in_turn(coordinator, index):
    recorder = Recorder(history, f"{coordinator.member_id}-{index}")
    lock = coordinator.lock(name)
    stop = time.monotonic() + float(seconds)
    while time.monotonic() < stop:
        while not lock.acquire(blocking=0.002):  # each try opens the path anew
            pass
        token, enter = lock.token, time.monotonic()
        time.sleep(0.002)
        leave = time.monotonic()
        told = lock.lost.is_set()
        try:
            lock.release()
        except conch.LockLost:
            told = True
        recorder.add(Section(name, recorder.holder, token, enter, leave, told))

with conch.connect(url) as coordinator:
    threads = [threading.Thread(target=contend, args=(coordinator, index))
               for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
print("done" if not errors else f"died: {errors}", flush=True)
"""


@pytest.mark.timeout(120)
def test_contention_while_the_directory_is_removed_again_and_again_stays_safe(
    tmp_path: pathlib.Path, directory: pathlib.Path
) -> None:
    """Two processes of two threads each take one lock in turn while the directory is
    removed every 20 ms: no thread dies, and no two holders overlap unless one of
    them was told of its loss (by ``lock.lost`` or, at the latest, by ``LockLost``
    from its release); tokens of the holders not told strictly increase."""
    history = tmp_path / "history"
    history.mkdir()
    url = f"file://{directory}"
    contenders = [file_helpers.run(_CONTENDER, url, NAME, str(history), "3") for _ in range(2)]
    stop = threading.Event()

    def remove_again_and_again() -> None:
        while not stop.wait(0.02):
            shutil.rmtree(directory, ignore_errors=True)

    remover = threading.Thread(target=remove_again_and_again)
    remover.start()
    try:
        for contender in contenders:
            workers.expect(contender, "done", timeout=60)
            workers.finish(contender)
    finally:
        stop.set()
        remover.join()
        file_helpers.stop(*contenders)
    sections = load(history)
    assert len({section.holder for section in sections}) >= 2
    problems = violations(sections)
    assert not problems, "\n".join(problems[:20])

