"""``conch demo``: worker processes change shared VNFs, one lock per VNF keeps them apart.

Each worker is a separate process (``spawn``), as separate services would be.
It repeatedly picks a VNF and runs its next lifecycle operation (instantiate,
heal or terminate, read from and written back to the VNF's state file) inside
``@conch.synchronized("{f_name}-{vnf.id}")``. The parent prints each operation as
it starts, then loads the history every worker recorded and checks it with
:func:`conch.history.violations`, the project's one safety checker.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import multiprocessing.connection
import pathlib
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import conch
from conch import history
from conch.coordinator import Coordinator
from conch.errors import ConchError
from conch.lock import Lock, LockName

OPERATION_SECONDS = (0.02, 0.08)
"""How long one lifecycle operation works while holding its VNF's lock."""
PAUSE_SECONDS = (0.0, 0.03)
"""How long a worker pauses between two operations."""


@dataclasses.dataclass(frozen=True)
class Vnf:
    """A virtual network function: what the lifecycle operations change."""

    id: str


class _Step(NamedTuple):
    """One operation, sent by its worker to the parent as soon as it holds the lock."""

    offset: float  # seconds since the demo started
    worker: str
    operation: str
    vnf: str
    lock: str
    token: int | None
    waited: float


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one worker process does."""

    worker: str
    url: str
    vnfs: int
    operations: int
    run_dir: str
    started: float  # the parent's time.monotonic(), one clock for all processes of a host


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument("--workers", type=_positive, default=4, metavar="N",
                        help="worker processes (default: 4)")
    parser.add_argument("--vnfs", type=_positive, default=3, metavar="K",
                        help="VNFs they share (default: 3)")
    parser.add_argument("--operations", type=_positive, default=10, metavar="M",
                        help="operations per worker (default: 10)")


def run_demo(url: str, workers: int, vnfs: int, operations: int) -> int:
    """Run the demo on ``url``; 0 when the history is safe, 1 when it shows a violation."""
    with conch.connect(url) as coordinator:  # an unreachable backend fails here, once
        capabilities = coordinator.capabilities
        shown_url = coordinator.url
    print(f"conch demo: {_count(workers, 'worker process', 'es')}, "
          f"{_count(operations, 'operation')} each, on {_count(vnfs, 'VNF')}")
    print('each runs in lifecycle(vnf), decorated @conch.synchronized("{f_name}-{vnf.id}"):')
    print(f'one lock per VNF ("lifecycle-vnf-1", ...) at {shown_url}\n')
    print(f"{'time':>8}  {'worker':<9} {'operation':<12} {'vnf':<7} "
          f"{'fencing token':>17} {'waited':>10}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="conch-demo-") as run_dir:
        plans = [_Plan(f"worker-{n}", url, vnfs, operations, run_dir, started)
                 for n in range(1, workers + 1)]
        steps, failures = _run_workers(plans)
        sections = history.load(run_dir)
    elapsed = time.monotonic() - started
    found = history.violations(sections, fencing=capabilities.fencing)
    print(f"\n{len(sections)} operations in {elapsed:.2f} s; history checked by "
          "conch.history.violations:")
    if found:
        for violation in found:
            print(f"  VIOLATION {violation}")
        print(f"UNSAFE: {_count(len(found), 'violation')}")
    else:
        tokens = ("fencing tokens increased on every VNF" if capabilities.fencing
                  else "this backend gives no fencing tokens to check")
        print(f"SAFE: no two operations on one VNF overlapped; {tokens}")
    lost = sum(section.lost for section in sections)
    if lost:
        print(f"{lost} of them were told their lock was lost (the checker ignores their "
              "overlaps: their holders knew)")
    _print_statistics(steps, sections)
    if found:
        return 1
    if failures:
        raise failures[0]
    return 0


def _run_workers(plans: Sequence[_Plan]) -> tuple[list[_Step], list[ConchError]]:
    """Run one process per plan, printing each step as it arrives; return steps and failures."""
    context = multiprocessing.get_context("spawn")
    readers: list[multiprocessing.connection.Connection] = []
    processes = []
    steps: list[_Step] = []
    failures: list[ConchError] = []
    try:
        for plan in plans:
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(target=_work, args=(plan, writer), name=plan.worker,
                                      daemon=True)
            process.start()
            writer.close()  # the worker holds the only write end: EOF means it exited
            readers.append(reader)
            processes.append(process)
        while readers:
            multiprocessing.connection.wait(readers)
            batch = _drain(readers)
            for message in sorted(batch, key=lambda m: m.offset if isinstance(m, _Step) else 0):
                if isinstance(message, _Step):
                    steps.append(message)
                    print(_format_step(message), flush=True)
                else:
                    failures.append(message)
                    print(f"conch: {message}", file=sys.stderr, flush=True)
        for process in processes:
            process.join()
            if process.exitcode != 0:
                failures.append(ConchError(f"{process.name} exited with status "
                                           f"{process.exitcode}"))
    finally:
        for process in processes:  # only alive when the parent was interrupted
            if process.is_alive():
                process.terminate()
                process.join()
    return steps, failures


def _drain(readers: list[multiprocessing.connection.Connection]) -> list[_Step | ConchError]:
    """Every message waiting in ``readers``; a reader at EOF (its worker exited) is removed.

    Passes over all readers repeat until one reads nothing: a step sent before one
    that was read is then read too, so sorting the batch by time prints the
    operations on one VNF in the order they held its lock.
    """
    batch: list[_Step | ConchError] = []
    while True:
        read = len(batch)
        for reader in list(readers):
            try:
                while reader.poll():
                    batch.append(reader.recv())
            except EOFError:
                readers.remove(reader)
        if len(batch) == read:
            return batch


def _format_step(step: _Step) -> str:
    return (f"{step.offset:7.3f}s  {step.worker:<9} {step.operation:<12} {step.vnf:<7} "
            f"{step.token!s:>17} {step.waited * 1000:7.1f} ms")


def _print_statistics(steps: Sequence[_Step], sections: Sequence[history.Section]) -> None:
    waits: dict[str, list[float]] = defaultdict(list)
    holds: dict[str, list[float]] = defaultdict(list)
    vnf_of_lock = {step.lock: step.vnf for step in steps}
    for step in steps:
        waits[step.vnf].append(step.waited * 1000)
    for section in sections:
        holds[vnf_of_lock.get(section.name, section.name)].append(
            (section.exit - section.enter) * 1000)
    print(f"\n{'ms':<8} {'ops':>4}  {'wait mean':>9} {'p50':>6} {'max':>6}  "
          f"{'hold mean':>9} {'p50':>6} {'max':>6}")
    for vnf in sorted(waits, key=_natural):
        print(f"{vnf:<8} {len(waits[vnf]):>4}  {_stats(waits[vnf])}  {_stats(holds[vnf])}")


def _stats(values: list[float]) -> str:
    if not values:
        return f"{'-':>9} {'-':>6} {'-':>6}"
    return (f"{statistics.fmean(values):9.1f} {statistics.median(values):6.1f} "
            f"{max(values):6.1f}")


def _count(number: int, noun: str, plural: str = "s") -> str:
    return f"{number} {noun}{'' if number == 1 else plural}"


def _natural(vnf: str) -> tuple[str, int]:
    """Sort vnf-2 before vnf-10."""
    prefix, _, number = vnf.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (vnf, 0)


class _LockWitness(Coordinator):
    """A coordinator that remembers the last lock it handed out and when it was asked.

    ``synchronized`` keeps its lock to itself; the demo shows each hold's fencing
    token and wait, so the worker's coordinator keeps them (one thread per worker).
    """

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix=prefix)
        self.last_lock: Lock | None = None
        self.asked = 0.0

    def lock(self, name: LockName, metric_label: str | None = None, *,
             shared: bool = False) -> Lock:
        self.asked = time.monotonic()
        self.last_lock = super().lock(name, metric_label, shared=shared)
        return self.last_lock


def _work(plan: _Plan, steps: multiprocessing.connection.Connection) -> None:
    """One worker process: ``plan.operations`` lifecycle operations on random VNFs."""
    # Ctrl-C reaches every process of the terminal's group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = random.Random()
    recorder = history.Recorder(plan.run_dir, plan.worker)
    try:
        coordinator = _LockWitness(plan.url, prefix=f"demo-{plan.worker}-")
        with coordinator:

            # All operations on one VNF must exclude each other, so the name holds the
            # VNF and not the operation: f_name is this one function, "lifecycle".
            @conch.synchronized("{f_name}-{vnf.id}", coordinator=coordinator)
            def lifecycle(vnf: Vnf) -> None:
                """Run ``vnf``'s next operation; nobody else changes ``vnf`` meanwhile."""
                lock = coordinator.last_lock
                assert lock is not None and isinstance(lock.name, str)
                acquired = time.monotonic()
                with recorder.section(lock.name, lock.token, history.Lost(lock.lost.is_set)):
                    state = pathlib.Path(plan.run_dir, f"{vnf.id}.state")
                    operation = _next_operation(state, rng)
                    steps.send(_Step(acquired - plan.started, plan.worker, operation, vnf.id,
                                     lock.name, lock.token, acquired - coordinator.asked))
                    time.sleep(rng.uniform(*OPERATION_SECONDS))
                    state.write_text("NOT_INSTANTIATED" if operation == "terminate"
                                     else "INSTANTIATED")

            for _ in range(plan.operations):
                lifecycle(Vnf(f"vnf-{rng.randint(1, plan.vnfs)}"))
                time.sleep(rng.uniform(*PAUSE_SECONDS))
    except ConchError as exc:
        steps.send(type(exc)(f"{plan.worker}: {exc}"))  # same type: the same exit status


def _next_operation(state: pathlib.Path, rng: random.Random) -> str:
    """The operation a VNF in ``state`` may undergo: instantiate it, else heal or terminate."""
    if not state.exists() or state.read_text() != "INSTANTIATED":
        return "instantiate"
    return rng.choice(("heal", "heal", "terminate"))


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value
