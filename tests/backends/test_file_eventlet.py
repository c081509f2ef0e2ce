"""``file://`` in a process that ``eventlet.monkey_patch()``-ed first (Cinder, Manila,
Tacker): the sync API and ``synchronized`` work, and no wait stops the hub (nor a shared
hold's or a permit's).

Each test runs :data:`_GREEN` in its own process (this one is not monkey-patched),
with a green thread ticking every 10 ms: the longest gap between its ticks says
whether a wait blocked the hub (a blocking ``flock`` would stop it for the whole wait).
The lock is held by another process (:data:`~tests.backends.file_helpers.HOLDER`).
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import time

import pytest

from tests.backends import file_helpers
from tests.backends.file_helpers import HOLDER
from tests.contract import workers
from tests.contract.waiting import HANDOFF_WITH_NOTIFY

NAME = "vnf-42"
TICK_GAP = 0.1
"""Seconds the ticker may go without running (it asks for 10 ms)."""

_GREEN = """
import eventlet
eventlet.monkey_patch()

import shutil, sys, time
import conch

url, scenario, blocking, kind = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
blocking = True if blocking == "forever" else float(blocking)
gaps = [0.0]

def tick():
    last = time.monotonic()
    while True:
        eventlet.sleep(0.01)
        gaps.append(time.monotonic() - last)
        last = time.monotonic()

def say(*words):
    print(*words, flush=True)

def wait_green(coordinator, lock):
    if scenario == "synchronized":
        run = conch.synchronized(lock.name, blocking, coordinator)(lambda: True)
    else:
        run = lambda: lock.acquire(blocking) and lock.release() is None
    waiter = eventlet.spawn(run)
    eventlet.sleep(0.3)
    assert not waiter.dead, "acquired a lock another process holds"
    say("waiting")
    if scenario == "stop":
        coordinator.stop()
    try:
        say("result", waiter.wait())
    except conch.NotStarted:
        say("result NotStarted")

eventlet.spawn(tick)
with conch.connect(url) as coordinator:
    lock = coordinator.lock("vnf-42") if kind == "exclusive" \
        else coordinator.lock("vnf-42", shared=True) if kind == "shared" \
        else coordinator.semaphore("vnf-42", 1)
    if scenario == "timed-out":
        assert lock.acquire(blocking=False) is False
        started = time.monotonic()
        say("result", lock.acquire(blocking), time.monotonic() - started)
    elif scenario == "removed":
        assert lock.acquire()
        shutil.rmtree(url[len("file://"):].partition("?")[0])
        say("result", lock.lost.wait(5))
        try:
            lock.release()
        except conch.LockLost:
            say("LockLost")
    else:
        wait_green(coordinator, lock)
say("gap", max(gaps))
"""


@pytest.fixture
def url(tmp_path: pathlib.Path) -> str:
    return f"file://{tmp_path / 'locks'}?sweep_after=0.01"  # a green sweep at each release


def _green(url: str, scenario: str, blocking: str = "forever",
           kind: str = "exclusive") -> subprocess.Popen[str]:
    return file_helpers.run(_GREEN, url, scenario, blocking, kind)


def _ticked(green: subprocess.Popen[str]) -> None:
    gap = float(workers.expect(green, "gap "))
    workers.finish(green)
    assert gap < TICK_GAP, f"the hub stopped for {gap:.3f} s during the wait"


def test_a_timed_wait_returns_false_on_time_while_green_threads_run(url: str) -> None:
    holder = file_helpers.run(HOLDER, url, NAME)
    green = None
    try:
        workers.expect(holder, "held ")
        green = _green(url, "timed-out", "0.5")
        returned, took = workers.expect(green, "result ").split()
        assert returned == "False"
        assert 0.5 <= float(took) < 0.5 + 0.3, f"a 0.5 s wait took {took} s"
        _ticked(green)
    finally:
        file_helpers.stop(holder, green)


@pytest.mark.parametrize(("scenario", "ending", "blocking", "kind"), [
    ("acquire", "release", "forever", "exclusive"), ("acquire", "release", "30", "exclusive"),
    ("acquire", "sigkill", "forever", "exclusive"), ("acquire", "sigkill", "30", "exclusive"),
    ("synchronized", "release", "forever", "exclusive"),
    ("acquire", "release", "forever", "shared"), ("acquire", "sigkill", "30", "shared"),
    ("acquire", "sigkill", "forever", "permit"), ("acquire", "sigkill", "30", "permit"),
])
def test_a_green_wait_is_woken_by_the_release_or_death_of_the_holder(
    url: str, scenario: str, ending: str, blocking: str, kind: str
) -> None:
    """``kind``: the green wait's (a shared one waits for an exclusive holder); a permit's
    holder is the contract worker, which holds until killed."""
    holder = file_helpers.run(HOLDER, url, NAME) if kind != "permit" \
        else workers.spawn(url, "hold", NAME, "permit:1")
    green = None
    try:
        workers.expect(holder, "held ")
        green = _green(url, scenario, blocking, kind)
        workers.expect(green, "waiting")
        ended = time.monotonic()
        if ending == "release":
            file_helpers.tell(holder, "release")
        else:
            holder.send_signal(signal.SIGKILL)
        assert workers.expect(green, "result ") == "True"
        took = time.monotonic() - ended
        assert took < HANDOFF_WITH_NOTIFY, f"woken {took:.3f} s after the {ending}"
        _ticked(green)
    finally:
        file_helpers.stop(holder, green)


def test_stop_ends_a_green_forever_wait(url: str) -> None:
    """Unlike a blocking ``flock``, the green wait is woken by closing the backend."""
    holder = file_helpers.run(HOLDER, url, NAME)
    green = None
    try:
        workers.expect(holder, "held ")
        green = _green(url, "stop")
        workers.expect(green, "waiting")
        stopped = time.monotonic()
        assert workers.expect(green, "result ") == "NotStarted"
        assert time.monotonic() - stopped < HANDOFF_WITH_NOTIFY
        _ticked(green)
    finally:
        file_helpers.stop(holder, green)


def test_a_green_holder_is_told_its_directory_was_removed(url: str) -> None:
    green = _green(url, "removed")
    try:
        assert workers.expect(green, "result ") == "True"
        workers.expect(green, "LockLost")
        _ticked(green)
    finally:
        file_helpers.stop(green)
