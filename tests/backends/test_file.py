"""``file://``: what the kernel-lock backend adds to the contract: directory, files, sweep, fork."""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import signal
import statistics
import time

import pytest

import conch
from conch.backends.file.session import HIGH_WATER_FILE
from conch.history import load, violations
from tests.backends.file_helpers import handoff_delays, hold_once, lock_file_name
from tests.contract import workers
from tests.contract.waiting import Waiter
from tests.servers.base import wait_until


@pytest.fixture
def directory(tmp_path: pathlib.Path) -> pathlib.Path:
    """The lock directory (not created: the backend does that)."""
    return tmp_path / "locks"


def test_missing_directory_is_created_with_its_parents(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "state" / "conch" / "locks"
    with conch.connect(f"file://{directory}") as coordinator, coordinator.lock("vnf-42"):
        assert directory.is_dir()


@pytest.mark.parametrize("where", ["under /proc", "under a regular file"])
def test_unusable_directory_raises_backend_unavailable_naming_it(
    tmp_path: pathlib.Path, where: str
) -> None:
    if where == "under /proc":
        directory = pathlib.Path("/proc/conch-test/locks")
    else:
        (tmp_path / "plain-file").write_text("")
        directory = tmp_path / "plain-file" / "locks"
    with pytest.raises(conch.BackendUnavailable, match=f"cannot use lock directory {directory}"):
        conch.connect(f"file://{directory}")


def test_requiring_distributed_fails_before_the_directory_is_made(directory: pathlib.Path) -> None:
    with pytest.raises(conch.NotSupported, match="distributed"):
        conch.connect(f"file://{directory}", require={"distributed"})
    assert not directory.exists()


@pytest.mark.parametrize("name", [
    "../../etc/passwd", "/etc/passwd", "..", ".", "a\x00b", "m" * 64 * 1024,
    "\udcff/../x", b"\xff/../../x", "日本語/ロック",
], ids=["parent-escape", "absolute", "dotdot", "dot", "nul", "64KiB", "surrogate", "bytes",
        "unicode"])
def test_lock_files_stay_inside_the_directory_whatever_the_name(
    tmp_path: pathlib.Path, directory: pathlib.Path, name: str | bytes
) -> None:
    with conch.connect(f"file://{directory}") as coordinator, coordinator.lock(name):
        created = [path for path in tmp_path.rglob("*") if path != directory]
        assert created and all(path.parent == directory and path.is_file() for path in created)
        for path in created:
            assert len(path.name.encode()) <= 255
            assert path.name == HIGH_WATER_FILE or path.name.endswith(".lock")


def test_sweep_removes_idle_lock_files_and_tokens_keep_increasing(
    directory: pathlib.Path,
) -> None:
    with conch.connect(f"file://{directory}?sweep_after=0.05") as coordinator:
        first = hold_once(coordinator.lock("idle"))
        time.sleep(0.1)
        hold_once(coordinator.lock("trigger"))  # a release starts the sweep that is due
        idle_file = directory / lock_file_name(b"idle")
        wait_until(lambda: not idle_file.exists(), 5, "the sweep of an idle lock file")
        assert hold_once(coordinator.lock("idle")) > first


def test_sweep_never_removes_a_held_lock_file(directory: pathlib.Path) -> None:
    with conch.connect(f"file://{directory}?sweep_after=0.05") as coordinator:
        held = coordinator.lock("held")
        assert held.acquire()
        time.sleep(0.1)
        for _ in range(3):
            hold_once(coordinator.lock("trigger"))
            time.sleep(0.1)
        assert (directory / lock_file_name(b"held")).exists()
        assert coordinator.lock("held").acquire(blocking=False) is False
        held.release()


@pytest.mark.timeout(120)
def test_aggressive_sweeping_during_contention_never_admits_two_holders(
    tmp_path: pathlib.Path, directory: pathlib.Path
) -> None:
    url = f"file://{directory}?sweep_after=0.001"
    history, counter = tmp_path / "history", tmp_path / "counter"
    history.mkdir()
    counter.write_text("0")
    processes = [workers.spawn(url, "contend", "vnf-42", str(history), str(counter), "2")
                 for _ in range(2)]
    try:
        for process in processes:
            workers.expect(process, "ready")
        with conch.connect(url) as coordinator:
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("go 2.5\n")
                process.stdin.flush()
            workers.contend_in_threads([coordinator], "vnf-42", history, counter, 2, 2.5)
        for process in processes:
            workers.finish(process)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    sections = load(history)
    assert len({section.holder for section in sections}) >= 2
    problems = violations(sections)
    assert not problems, "\n".join(problems[:20])
    assert int(counter.read_text()) == len(sections)


@pytest.mark.parametrize("blocking", [True, 30.0], ids=["forever", "timed"])
def test_a_waiter_that_locks_an_unlinked_file_keeps_waiting_for_the_linked_one(
    directory: pathlib.Path, blocking: bool | float
) -> None:
    with conch.connect(f"file://{directory}") as coordinator:
        holder = coordinator.lock("vnf-42")
        assert holder.acquire()
        waiter = Waiter(coordinator.lock("vnf-42"), blocking)
        time.sleep(0.2)
        (directory / lock_file_name(b"vnf-42")).unlink()  # as a sweep unlinks a file it locked
        newcomer = coordinator.lock("vnf-42")
        assert newcomer.acquire(blocking=False), "the path's new file should be free"
        with pytest.raises(conch.LockLost, match="was removed while held"):
            holder.release()  # frees the unlinked file the waiter waits on
        time.sleep(0.3)
        assert waiter.waiting, "the waiter took the lock of an unlinked file: two holders"
        newcomer.release()
        assert waiter.result(timeout=10) is True
        waiter.lock.release()


def test_a_wiped_lock_file_still_gets_a_larger_token(directory: pathlib.Path) -> None:
    with conch.connect(f"file://{directory}") as coordinator:
        lock = coordinator.lock("vnf-42")
        tokens = [hold_once(lock) for _ in range(3)]
        (directory / lock_file_name(b"vnf-42")).unlink()
        assert hold_once(lock) > tokens[-1]


def test_a_wiped_directory_still_gives_larger_tokens(directory: pathlib.Path) -> None:
    url = f"file://{directory}"
    with conch.connect(url) as coordinator:
        before = [hold_once(coordinator.lock("vnf-42")) for _ in range(3)]
    shutil.rmtree(directory)
    with conch.connect(url) as coordinator:
        assert hold_once(coordinator.lock("vnf-42")) > before[-1]


def test_a_forked_child_takes_tokens_in_turn_with_its_parent(directory: pathlib.Path) -> None:
    """The child gets its own description of the token file, so the flock that
    serialises token issue excludes its parent (a shared one would not)."""
    with conch.connect(f"file://{directory}") as coordinator:
        parents_fd = _fd_open_on(directory / HIGH_WATER_FILE)
        fcntl.flock(parents_fd, fcntl.LOCK_EX)  # as the parent does while issuing a token
        report, reported = os.pipe()
        child = os.fork()
        if child == 0:
            _in_child_time_a_first_token(coordinator, reported)
        os.close(reported)
        time.sleep(0.3)
        fcntl.flock(parents_fd, fcntl.LOCK_UN)
        _, status = os.waitpid(child, 0)
        waited = os.read(report, 100).decode()
        os.close(report)
    assert os.waitstatus_to_exitcode(status) == 0, waited
    assert float(waited) >= 0.25, "the child issued a token while its parent held the flock"


def _fd_open_on(path: pathlib.Path) -> int:
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") == str(path):
                return int(entry)
        except OSError:
            continue
    raise AssertionError(f"no descriptor open on {path}")


def _in_child_time_a_first_token(coordinator: conch.Coordinator, reported: int) -> None:
    status = 1
    try:
        signal.alarm(20)  # never outlive the test
        started = time.monotonic()
        lock = coordinator.lock("new-name")  # a new file: its token comes from the token file
        lock.acquire()
        os.write(reported, str(time.monotonic() - started).encode())
        lock.release()
        status = 0
    except BaseException as exc:
        os.write(reported, repr(exc).encode())
    finally:
        os._exit(status)


def test_a_timed_waiter_returns_at_once_after_the_release(directory: pathlib.Path) -> None:
    # Closing an inotify instance once a watch was removed waits for a kernel grace
    # period (~16 ms): a waiter that closed its instance on the way out came back late.
    url = f"file://{directory}"
    with conch.connect(url) as first, conch.connect(url) as second:
        holder = first.lock("handoff")
        assert holder.acquire()
        delays = handoff_delays(holder, second.lock("handoff"), 15)
    assert statistics.median(delays) < 0.008, f"hand-offs took {sorted(delays)}"
