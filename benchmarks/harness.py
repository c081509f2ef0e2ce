"""The measurements. Each runs in processes freshly forked for one contender.

* **uncontended**: one process times ``acquire(); release()`` on one name.
* **hand-off**: two processes ping-pong one name. The holder reads
  ``time.monotonic_ns()`` just before ``release()``; the waiter reads it right
  after its blocking ``acquire()`` returns. ``CLOCK_MONOTONIC`` is one clock for
  the whole system on Linux, so the difference is the time from a release to the
  waiter holding the lock. The holder releases only once the waiter has said it is
  about to block, after a random hold (:attr:`Settings.hold_ms`).
* **contended**: N processes loop ``acquire(); release()`` on one name for a fixed
  time. Inside each hold they increment a shared counter without any other
  synchronisation: the counter ends exact only if the lock really excluded them.

The parent process never sets a contender up, so every child starts clean;
children are forked (Linux), so they start in milliseconds and need no pickling.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing
import multiprocessing.connection
import queue
import random
import statistics
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from benchmarks.contenders.base import Contender, Settings

_FORK = multiprocessing.get_context("fork")
_WAITING = b"w"  # the waiter is about to call acquire()
_ACQUIRED = b"a"  # the waiter's acquire() returned
_READY = b"r"  # process 0 holds the lock: the ping-pong may start
_SLACK_S = 120.0  # set-up and shut-down allowance on top of a measurement's own time

Job = Callable[[Contender], Any]


class MeasurementFailed(Exception):
    """A child process failed or overran; the text says which and why."""


@dataclasses.dataclass
class Latency:
    """A latency distribution, in microseconds."""

    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    samples: int

    @classmethod
    def of(cls, durations_ns: Sequence[int]) -> Latency:
        ordered = sorted(durations_ns)
        return cls(
            p50_us=percentile(ordered, 0.50) / 1000,
            p90_us=percentile(ordered, 0.90) / 1000,
            p99_us=percentile(ordered, 0.99) / 1000,
            max_us=ordered[-1] / 1000,
            mean_us=sum(ordered) / len(ordered) / 1000,
            samples=len(ordered),
        )


@dataclasses.dataclass
class HandoffRun:
    """One ping-pong's release-to-acquired durations (ns)."""

    durations_ns: list[int]
    late_waiters: int
    """Rounds where the waiter entered acquire() only after the release (not counted)."""


@dataclasses.dataclass
class Handoff:
    """Release-to-acquired latency between two processes, over all ping-pongs."""

    latency: Latency
    late_waiters: int
    samples_us: list[float]

    @classmethod
    def of(cls, runs: Sequence[HandoffRun]) -> Handoff:
        durations = [duration for run in runs for duration in run.durations_ns]
        return cls(Latency.of(durations), sum(run.late_waiters for run in runs),
                   [round(duration / 1000, 1) for duration in durations])


@dataclasses.dataclass
class Throughput:
    """Acquisitions while ``processes`` processes hammer one name."""

    processes: int
    duration_s: float
    counts: list[int]
    """Acquisitions of each process within ``duration_s`` (combined: every block's)."""
    total_per_s: float
    jain: float
    """Jain's fairness index over one run's ``counts`` (combined: the blocks' mean)."""
    excluded: bool
    """The shared counter incremented inside every hold came out exact."""


@dataclasses.dataclass
class ContenderResult:
    """Everything measured for one contender; a failed measurement leaves an error."""

    name: str
    version: str
    floor: bool
    uncontended: Latency | None = None
    handoff: Handoff | None = None
    contended: dict[int, Throughput] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


def percentile(ordered: Sequence[int], fraction: float) -> float:
    """The nearest-rank percentile of sorted ``ordered``."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def jain_index(counts: Sequence[int]) -> float:
    """Jain's fairness index: 1 when every process got the same share, 1/n when one got all."""
    total = sum(counts)
    squares = sum(count * count for count in counts)
    return total * total / (len(counts) * squares) if squares else 0.0


def uncontended(contender: type[Contender], target: str, iterations: int) -> list[int]:
    """Durations (ns) of ``iterations`` acquire+release cycles of one process alone."""
    job = functools.partial(_time_cycles, _fresh_name("uncontended"), iterations)
    [durations] = _run(contender, target, [job], _SLACK_S)
    return list(durations)


def hold_times(settings: Settings, rounds: int, seed: int) -> list[float]:
    """How long (s) the holder keeps the lock in each hand-off round; ``seed`` fixes them."""
    low, high = settings.hold_ms
    chooser = random.Random(seed)
    return [chooser.uniform(low, high) / 1000 for _ in range(rounds)]


def handoff(contender: type[Contender], target: str, holds: Sequence[float]) -> HandoffRun:
    """One hand-off per hold between two processes, the first tenth not counted."""
    ends = _FORK.Pipe()
    name = _fresh_name("handoff")
    jobs = [functools.partial(_ping_pong, me, ends[me], holds, name) for me in (0, 1)]
    # A polling waiter may sleep up to ~100 ms per round on top of the hold.
    timeout = _SLACK_S + sum(holds) + len(holds) * 0.2
    releases: dict[int, int] = {}
    acquires: dict[int, tuple[int, int]] = {}
    for released, acquired in _run(contender, target, jobs, timeout):
        releases.update(released)
        acquires.update(acquired)
    counted = range(len(holds) // 10, len(holds))  # the first rounds warm up
    late = {r for r in counted if acquires[r][0] > releases[r]}
    return HandoffRun([acquires[r][1] - releases[r] for r in counted if r not in late], len(late))


def contended(
    contender: type[Contender], target: str, seconds: float, processes: int
) -> Throughput:
    """Acquisitions per process while ``processes`` processes hammer one name for ``seconds``."""
    start_ns: Synchronized[int] = _FORK.Value("q", 0)
    shared_counter: Synchronized[int] = _FORK.RawValue("q", 0)
    barrier = _FORK.Barrier(processes, action=functools.partial(_stamp, start_ns),
                            timeout=_SLACK_S)
    job = functools.partial(_hammer, barrier, start_ns, shared_counter, int(seconds * 1e9),
                            _fresh_name("contended"))
    outcomes = _run(contender, target, [job] * processes, _SLACK_S + seconds)
    counts = [counted for counted, _ in outcomes]
    return Throughput(
        processes=processes,
        duration_s=seconds,
        counts=counts,
        total_per_s=sum(counts) / seconds,
        jain=jain_index(counts),
        excluded=shared_counter.value == sum(holds for _, holds in outcomes),
    )


def combined(blocks: Sequence[Throughput]) -> Throughput:
    """One figure from a contender's blocks of a process count: every process of every block
    in ``counts`` (each over ``duration_s``, one block's time), acquisitions over the blocks'
    total time, and the blocks' mean Jain index (load drift between blocks is no unfairness)."""
    return Throughput(
        processes=blocks[0].processes,
        duration_s=blocks[0].duration_s,
        counts=[count for block in blocks for count in block.counts],
        total_per_s=sum(sum(b.counts) for b in blocks) / sum(b.duration_s for b in blocks),
        jain=statistics.fmean(block.jain for block in blocks),
        excluded=all(block.excluded for block in blocks),
    )


# --- in the child processes ---------------------------------------------------------


def _time_cycles(name: str, iterations: int, contender: Contender) -> list[int]:
    lock = contender.lock(name)
    for _ in range(iterations // 10):  # warm-up: create the file, fill caches
        lock.acquire()
        lock.release()
    clock = time.perf_counter_ns
    durations = [0] * iterations
    for i in range(iterations):
        start = clock()
        lock.acquire()
        lock.release()
        durations[i] = clock() - start
    return durations


def _ping_pong(
    me: int,
    peer: multiprocessing.connection.Connection,
    holds: Sequence[float],
    name: str,
    contender: Contender,
) -> tuple[dict[int, int], dict[int, tuple[int, int]]]:
    """Round ``r`` is held by process ``r % 2`` and handed to the other one.

    Returns each round's release time (as holder) and (entered, acquired) times
    (as waiter). A holder waits for the peer's acquired message before acquiring
    again, so it never takes the lock back before the waiter got it.
    """
    lock = contender.lock(name)
    clock = time.monotonic_ns
    releases: dict[int, int] = {}
    acquires: dict[int, tuple[int, int]] = {}
    holding = me == 0
    if holding:
        lock.acquire()
        peer.send_bytes(_READY)
    else:
        peer.recv_bytes()
    for round_, hold in enumerate(holds):
        if round_ % 2 == me:
            peer.recv_bytes()  # _WAITING
            time.sleep(hold)
            releases[round_] = clock()
            lock.release()
            holding = False
            peer.recv_bytes()  # _ACQUIRED
        else:
            peer.send_bytes(_WAITING)
            entered = clock()
            lock.acquire()
            acquires[round_] = (entered, clock())
            holding = True
            peer.send_bytes(_ACQUIRED)
    if holding:
        lock.release()
    return releases, acquires


def _stamp(start_ns: Synchronized[int]) -> None:
    start_ns.value = time.monotonic_ns()


def _hammer(
    barrier: Any,
    start_ns: Synchronized[int],
    shared_counter: Synchronized[int],
    duration_ns: int,
    name: str,
    contender: Contender,
) -> tuple[int, int]:
    """Returns (acquisitions within the measured time, all holds incl. the last one)."""
    lock = contender.lock(name)
    barrier.wait()  # the last process to arrive stamps the common start
    end = start_ns.value + duration_ns
    clock = time.monotonic_ns
    counted = holds = 0
    while True:
        lock.acquire()
        acquired_at = clock()
        shared_counter.value += 1  # a lost update here means two holders at once
        lock.release()
        holds += 1
        if acquired_at >= end:
            return counted, holds
        counted += 1


def _with_contender(contender_class: type[Contender], target: str, job: Job) -> Any:
    contender = contender_class(target)
    contender.setup()
    try:
        return job(contender)
    finally:
        contender.teardown()


def _child(job: Callable[[], Any], index: int, results: Any) -> None:
    try:
        outcome = job()
    except BaseException:
        results.put((index, None, traceback.format_exc()))
    else:
        results.put((index, outcome, None))


# --- in the parent --------------------------------------------------------------------


def _run(
    contender: type[Contender], target: str, jobs: Sequence[Job], timeout: float
) -> list[Any]:
    """Run each job in its own forked process, with a contender set up for it alone."""
    return in_children(
        contender.name,
        [functools.partial(_with_contender, contender, target, job) for job in jobs], timeout)


def in_children(label: str, jobs: Sequence[Callable[[], Any]], timeout: float) -> list[Any]:
    """Run each job in its own forked process; their outcomes in job order.

    Raises :class:`MeasurementFailed` when a job raises or all are not done within
    ``timeout`` seconds (the children left are killed).
    """
    results = _FORK.Queue()
    children = [
        _FORK.Process(target=_child, args=(job, index, results),
                      name=f"bench-{label}-{index}", daemon=True)
        for index, job in enumerate(jobs)
    ]
    for child in children:
        child.start()
    outcomes: list[Any] = [None] * len(jobs)
    deadline = time.monotonic() + timeout
    finished = False
    try:
        for _ in jobs:
            try:
                index, outcome, error = results.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise MeasurementFailed(f"no result within {timeout:.0f} s") from None
            if error is not None:
                raise MeasurementFailed(f"process {index} failed:\n{error}")
            outcomes[index] = outcome
        finished = True
    finally:
        for child in children:
            child.join(timeout=10 if finished else 0)
            if child.is_alive():  # left waiting for a peer that failed, or stuck
                child.kill()
                child.join()
        results.close()
    return outcomes


def _fresh_name(measurement: str) -> str:
    """A lock name no earlier measurement used, so no state carries over."""
    return f"{measurement}-{uuid.uuid4().hex[:12]}"
