"""``file://`` groups: member files under ``.conch-groups/``, alive while their process
keeps an ``flock``; a dead member's file is removed by the next reader; a member whose file
is removed (its directory cleaned up) is told and re-joins. Under eventlet:
tests/eventlet/test_green_groups.py."""

from __future__ import annotations

import hashlib
import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

import conch
from tests.backends import file_helpers
from tests.contract import workers

GROUP = "agents"
TOLD_WITHIN = 2.0
"""Seconds from a removal to ``group.lost``, or a death to the watcher's event (about a
millisecond unloaded)."""


@pytest.fixture
def url(file_url: str) -> str:
    return file_url


@pytest.fixture
def directory(url: str) -> pathlib.Path:
    return pathlib.Path(url[len("file://"):])


@pytest.fixture
def member(url: str) -> Iterator[conch.Coordinator]:
    with conch.connect(url, member_id="member") as started:
        yield started


def group_directory_name(group: bytes) -> str:
    """A group's directory, spelled out: processes of several conch versions must agree."""
    readable = re.sub(rb"[^A-Za-z0-9_-]+", b"_", group[:48]).decode("ascii")
    return f"{readable}.{hashlib.sha256(group).hexdigest()[:40]}"


def member_file(directory: pathlib.Path, group: bytes, member_id: str) -> pathlib.Path:
    return (directory / ".conch-groups" / group_directory_name(group)
            / (group_directory_name(member_id.encode()) + ".member"))


def wait_until(condition: object, within: float = TOLD_WITHIN) -> None:
    end = time.monotonic() + within
    while not callable(condition) or not condition():
        assert time.monotonic() < end, "not within the time"
        time.sleep(0.005)


def joined_worker(url: str, group: str) -> tuple[subprocess.Popen[str], str]:
    worker = workers.spawn(url, "join", group)
    return worker, workers.expect(worker, "joined ")


def test_member_files_live_under_the_groups_directory_whatever_the_name(
    directory: pathlib.Path, member: conch.Coordinator
) -> None:
    hostile = ["../../escape", "/abs/*%s\n", "é\u2603" * 40, "x" * 256, ".", ".."]
    for name in hostile:
        member.group(name).join({"name": name})
    assert sorted(member.groups()) == sorted(hostile)
    for name in hostile:
        assert member_file(directory, name.encode(), "member").is_file()
        assert member.group(name).members() == {"member": {"name": name}}
    assert os.listdir(directory.parent) == ["locks"]
    assert sorted(os.listdir(directory)) == [".conch-fencing-tokens", ".conch-groups"]
    assert len(os.listdir(directory / ".conch-groups")) == len(hostile)


def test_groups_and_locks_do_not_see_each_other(directory: pathlib.Path, url: str) -> None:
    with conch.connect(url + "?sweep_after=0.01") as coordinator:
        coordinator.group(GROUP).join()
        lock = coordinator.lock(".conch-groups")
        assert lock.acquire(blocking=False)
        assert [info.key for info in coordinator.holders()] == [b".conch-groups"]
        lock.release()
        time.sleep(0.05)
        lock.acquire(blocking=False)
        lock.release()  # a due sweep starts
        time.sleep(0.2)
        assert coordinator.group(GROUP).members() == {coordinator.member_id: None}


def test_a_killed_members_file_is_removed_by_the_next_reader(
    directory: pathlib.Path, url: str, member: conch.Coordinator
) -> None:
    worker, worker_id = joined_worker(url, GROUP)
    path = member_file(directory, GROUP.encode(), worker_id)
    assert path.exists()
    assert set(member.group(GROUP).members()) == {worker_id}
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    assert member.group(GROUP).members() == {}
    assert not path.exists()
    member.group(GROUP).delete()  # no live member: the dead one's file does not count


def test_a_watcher_hears_of_a_killed_member_at_once(url: str, member: conch.Coordinator) -> None:
    events: queue.Queue[conch.GroupEvent] = queue.Queue()
    member.group(GROUP).watch(events.put)
    worker, worker_id = joined_worker(url, GROUP)
    try:
        assert events.get(timeout=TOLD_WITHIN).joined == {worker_id}
        killed = time.monotonic()
        worker.send_signal(signal.SIGKILL)
        assert events.get(timeout=TOLD_WITHIN).left == {worker_id}
        print(f"a killed member left {(time.monotonic() - killed) * 1000:.1f} ms after SIGKILL")
    finally:
        file_helpers.stop(worker)


def test_a_member_whose_file_is_removed_is_told_and_joins_again(
    directory: pathlib.Path, member: conch.Coordinator, url: str
) -> None:
    group = member.group(GROUP)
    group.join({"weight": 2})
    member_file(directory, GROUP.encode(), "member").unlink()
    assert group.lost.wait(TOLD_WITHIN)
    with conch.connect(url) as other:
        wait_until(lambda: other.group(GROUP).members() == {"member": {"weight": 2}})
    assert group.joined


def test_members_join_again_after_the_lock_directory_is_removed(
    directory: pathlib.Path, member: conch.Coordinator, url: str
) -> None:
    events: queue.Queue[conch.GroupEvent] = queue.Queue()
    with conch.connect(url, member_id="watcher") as watcher:
        watcher.group(GROUP).watch(events.put)
        member.group(GROUP).join()
        assert events.get(timeout=TOLD_WITHIN).joined == {"member"}
        # ignore_errors: the member may be back in before the removal is done
        shutil.rmtree(directory, ignore_errors=True)
        assert member.group(GROUP).lost.wait(TOLD_WITHIN)
        # The member may be back before the watcher reads: then it is told nothing at all.
        seen, deadline = {"member"}, time.monotonic() + TOLD_WITHIN
        while True:
            try:
                seen = set(events.get(timeout=0.3).members)
            except queue.Empty:
                if "member" in seen:
                    break
            assert time.monotonic() < deadline, f"the watcher was told last: {seen}"
        assert watcher.group(GROUP).members() == {"member": None}
    assert member_file(directory, GROUP.encode(), "member").is_file()


def test_a_watcher_of_a_removed_directory_sees_the_group_made_again(
    directory: pathlib.Path, url: str
) -> None:
    events: queue.Queue[conch.GroupEvent] = queue.Queue()
    with conch.connect(url) as watcher:
        watcher.group(GROUP).watch(events.put)
        shutil.rmtree(directory)
        with conch.connect(url, member_id="late") as late:
            late.group(GROUP).join()
            assert events.get(timeout=TOLD_WITHIN).joined == {"late"}


def test_new_capabilities_are_never_seen_as_a_leave(url: str, member: conch.Coordinator) -> None:
    events: queue.Queue[conch.GroupEvent] = queue.Queue()
    with conch.connect(url) as watcher:
        watcher.group(GROUP).watch(events.put)
        group = member.group(GROUP)
        group.join(0)
        assert events.get(timeout=TOLD_WITHIN).joined == {"member"}
        for weight in range(1, 300):
            group.join(weight)
            assert watcher.group(GROUP).members() == {"member": weight}
        time.sleep(0.1)
        assert events.empty(), events.get()
        assert not group.lost.is_set()


def test_joining_and_leaving_quickly_is_never_taken_for_a_loss(
    member: conch.Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    group = member.group(GROUP)
    group.watch(lambda event: None)
    for weight in range(1001):
        group.join(weight)  # its old file renamed over, as the reader thread looks
        if weight % 2:
            group.leave()
    time.sleep(0.1)
    assert [record.message for record in caplog.records if "dropped" in record.message] == []
    assert group.members() == {"member": 1000}


def test_two_coordinators_with_one_member_id_share_its_entry_without_end(
    url: str, member: conch.Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    member.group(GROUP).join("first")
    with conch.connect(url, member_id="member") as twin:
        twin.group(GROUP).join("second")
        time.sleep(0.2)
        assert member.group(GROUP).members() == {"member": "second"}
        twin.group(GROUP).leave()
        wait_until(lambda: member.group(GROUP).members() == {"member": "first"})
    dropped = [record for record in caplog.records if "dropped" in record.message]
    assert len(dropped) == 1  # once, when the twin's entry went


def test_leaving_and_stopping_remove_the_member_files(
    directory: pathlib.Path, url: str
) -> None:
    with conch.connect(url, member_id="member") as coordinator:
        coordinator.group("one").join()
        coordinator.group("two").join()
        coordinator.group("one").leave()
        assert not member_file(directory, b"one", "member").exists()
        assert member_file(directory, b"two", "member").exists()
    assert not member_file(directory, b"two", "member").exists()
    assert sorted(os.listdir(directory / ".conch-groups")) == \
        sorted(group_directory_name(name) for name in (b"one", b"two"))


def test_a_file_that_is_not_a_members_is_ignored(
    directory: pathlib.Path, member: conch.Coordinator
) -> None:
    member.group(GROUP).join()
    stranger = member_file(directory, GROUP.encode(), "member").with_name("x.member")
    stranger.write_bytes(b"\xff\xff\xff\xff")
    holder = file_helpers.run(
        "import fcntl, sys; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); sys.stdin.readline()", str(stranger))
    try:
        assert workers.expect(holder, "held") == ""
        assert member.group(GROUP).members() == {"member": None}
    finally:
        file_helpers.stop(holder)


_FORKING_MEMBER = """
import os, sys, time
import conch
coordinator = conch.connect(sys.argv[1], member_id="parent")
coordinator.group("agents").join()
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print("forked", child, flush=True)
time.sleep(60)
"""


def test_a_forked_child_does_not_keep_its_dead_parent_in_the_group(
    url: str, member: conch.Coordinator
) -> None:
    events: queue.Queue[conch.GroupEvent] = queue.Queue()
    member.group(GROUP).watch(events.put)
    parent = file_helpers.run(_FORKING_MEMBER, url)
    child = None
    try:
        child = int(workers.expect(parent, "forked "))
        assert events.get(timeout=TOLD_WITHIN).joined == {"parent"}
        parent.send_signal(signal.SIGKILL)
        assert events.get(timeout=TOLD_WITHIN).left == {"parent"}
        assert member.group(GROUP).members() == {}
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        file_helpers.stop(parent)


def test_what_a_crash_left_half_done_is_removed_once_old(
    directory: pathlib.Path, member: conch.Coordinator
) -> None:
    member.group(GROUP).join()
    groups = directory / ".conch-groups"
    left = [groups / ".creating-0", groups / ".deleting-0",
            member_file(directory, GROUP.encode(), "member").with_name(".joining-0")]
    left[0].mkdir()
    left[1].mkdir()
    left[2].touch()
    assert member.groups() == [GROUP]
    assert member.group(GROUP).members() == {"member": None}
    assert all(path.exists() for path in left)  # might be in progress
    for path in left:
        os.utime(path, (time.time() - 120, time.time() - 120))
    assert member.groups() == [GROUP]
    assert member.group(GROUP).members() == {"member": None}
    assert not any(path.exists() for path in left)
