"""conch in processes under eventlet monkey-patching, on every backend.

Each case runs :mod:`tests.eventlet.green_worker` processes, which call
``eventlet.monkey_patch()`` before importing anything else, as Cinder, Manila and Tacker
do. In every wait a green ticker thread of the waiting process must keep ticking: a call
that blocked eventlet's hub (a blocking system call or C library call outside eventlet's
reach) would stop it for the length of the wait.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable

import pytest

import conch
from conch.history import load, violations
from tests.contract.waiting import dead_holder_bound, handoff_bound
from tests.eventlet.driving import Acquired, GreenWorker
from tests.eventlet.features import STEPS
from tests.eventlet.ticker import LONGEST_GAP

TIMED_WAIT = 1.0
"""Seconds of the timed wait on a lock held elsewhere."""

LATE_MARGIN = 0.5
"""Seconds a timed wait may overrun its time on a loaded machine."""

WAIT_BEFORE_RELEASE = 0.6
"""Seconds the waiter waits before the holder releases (or is killed)."""

CONTENTION_SECONDS = 1.5
THREADS_PER_PROCESS = 2


@pytest.fixture
def green(green_workers: Callable[[int], list[GreenWorker]]) -> Callable[[], GreenWorker]:
    """Start one green worker process on the backend under test (killed at the end)."""
    return lambda: green_workers(1)[0]


def assert_ticked(acquired: Acquired, what: str) -> None:
    print(f"{what}: waited {acquired.elapsed:.3f} s, longest tick gap {acquired.gap:.3f} s")
    assert acquired.gap < LONGEST_GAP, \
        f"{what}: the hub stopped for {acquired.gap:.3f} s (waited {acquired.elapsed:.3f} s)"


def test_the_ticker_sees_a_call_that_blocks_the_hub(memory_url: str) -> None:
    worker = GreenWorker(memory_url)
    try:
        worker.expect("ready")
        gap = float(worker.ask(f"block {2 * LONGEST_GAP}", "blocked")[0])
    finally:
        worker.close()
    assert gap >= 2 * LONGEST_GAP


@pytest.mark.core
@pytest.mark.timeout(90)
def test_waits_end_as_the_contract_says_and_never_stop_the_hub(
    url: str, backend: str, green: Callable[[], GreenWorker], lock_name: str
) -> None:
    with conch.connect(url) as coordinator:
        handoff, dead_holder = handoff_bound(coordinator.capabilities), \
            dead_holder_bound(coordinator)
    waiter = green()
    holder = waiter if backend == "memory" else green()  # memory:// lives in one process
    first_token = int(holder.ask(f"hold {lock_name}", "held")[0])

    result, gap = waiter.ask(f"try {lock_name}", "tried")
    assert result == "False", "blocking=False acquired a lock held elsewhere"
    assert float(gap) < LONGEST_GAP, f"blocking=False stopped the hub for {gap} s"

    waiter.ask(f"acquire {lock_name} {TIMED_WAIT}", "waiting")
    timed = Acquired.parse(waiter.expect("acquired"))
    assert timed.result is False, "a timed wait acquired a lock held elsewhere"
    assert TIMED_WAIT <= timed.elapsed < TIMED_WAIT + LATE_MARGIN, \
        f"a {TIMED_WAIT} s wait returned after {timed.elapsed:.3f} s"
    assert_ticked(timed, "a timed wait")

    waiter.ask(f"acquire {lock_name} forever", "waiting")
    time.sleep(WAIT_BEFORE_RELEASE)
    released_at = float(holder.ask("let-go", "let-go")[0])
    woken = Acquired.parse(waiter.expect("acquired"))
    assert woken.result is True
    assert woken.at - released_at < handoff, \
        f"woken {woken.at - released_at:.3f} s after the release (bound {handoff} s)"
    assert woken.token is not None and woken.token > first_token
    assert_ticked(woken, "a wait for the release")
    waiter.ask("release", "released")

    if backend == "memory":
        return
    dead_token = int(holder.ask(f"hold {lock_name}", "held")[0])
    waiter.ask(f"acquire {lock_name} {dead_holder}", "waiting")
    time.sleep(WAIT_BEFORE_RELEASE)
    holder.kill()
    killed_at = time.monotonic()
    taken = Acquired.parse(waiter.expect("acquired"))
    assert taken.result is True, f"still held {dead_holder} s after its holder was killed"
    assert taken.at - killed_at < dead_holder
    assert taken.token is not None and taken.token > dead_token
    assert_ticked(taken, "a wait for a killed holder's lock")
    waiter.ask("release", "released")


@pytest.mark.timeout(60)
def test_green_processes_never_hold_a_lock_at_once(
    backend: str, green: Callable[[], GreenWorker], lock_name: str, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history"
    history.mkdir()
    counter = tmp_path / "counter"
    counter.write_text("0")
    # memory:// locks live in one process: its two coordinators contend there.
    contenders = [green()] if backend == "memory" else [green(), green()]
    threads = THREADS_PER_PROCESS * (2 if backend == "memory" else 1)
    for contender in contenders:
        assert contender.process.stdin is not None
        contender.process.stdin.write(
            f"contend {lock_name} {history} {counter} {threads} {CONTENTION_SECONDS}\n")
        contender.process.stdin.flush()
    reported = sum(int(contender.expect("done")[0]) for contender in contenders)

    sections = load(history)
    assert len(sections) == reported, "sections went unrecorded"
    assert len({section.holder for section in sections}) >= 2, "no contention took place"
    problems = violations(sections, fencing=True)
    assert not problems, "\n".join(problems[:20])
    assert int(counter.read_text()) == len(sections), "an update was lost: two holders at once"


@pytest.mark.core
@pytest.mark.timeout(90)
def test_the_services_apis_renewal_loss_and_stop_work_green(url: str) -> None:
    worker = GreenWorker(url, "features")
    try:
        said = worker.finish(timeout=60)
    finally:
        worker.close()
    print(*said, sep="\n")  # each step, with its notes (pytest -s shows them)
    passed = [line.split()[1] for line in said if line.startswith("ok ")]
    expected = [step.__name__.rstrip("_") for step in STEPS] + ["renewal"]
    assert passed == expected
