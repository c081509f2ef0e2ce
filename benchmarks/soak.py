"""The soak run: hundreds of names, dozens of processes, random faults, zero violations.

    python -m benchmarks.soak --minutes 2                      # every backend, 2 min each
    python -m benchmarks.soak --minutes 5 --backends redis,etcd --processes 32 --names 500

For each backend in turn, a server of its own is started (as the test suites
do: tests/servers), then ``--processes`` worker processes (half of them through
a TCP proxy, :mod:`tests.chaos.proxy`) take random names among ``--names``,
updating each name's fenced counter inside the lock (:mod:`tests.chaos.worker`),
while faults are injected at random every few seconds: a worker SIGKILLed or
frozen past the lease, the server restarted or frozen, the proxy's connections
reset or partitioned. Workers run in rounds and are replaced when killed. At the
end the whole history goes through :mod:`conch.history` (overlaps, token order,
unreported losses, lost updates of the fenced counters), and the logs of every
process are searched for the server's password.

Prints one markdown table: acquisitions, the longest wait, losses reported,
faults injected, violations (which must be 0). Exits 1 on any violation. Not part
of the test suite (it runs for minutes); it is the "load" part of the chaos work
(docs/chaos.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence

from tests.chaos.driver import read_line, spawn
from tests.chaos.store import FencedStore
from tests.chaos.targets import PROCESS_BACKENDS, Target, start_server
from tests.chaos.worker import Tally

import conch
from benchmarks.soak_groups import GroupObserver
from conch.history import fenced_counter_violations, load
from conch.history import violations as history_violations

ROUND_SECONDS = 20.0
"""How long one worker process contends before it reports and is replaced."""
FAULT_EVERY = (2.0, 6.0)
"""Seconds between two faults (uniformly drawn)."""


@dataclasses.dataclass
class Outcome:
    """What one backend's soak did and found."""

    backend: str
    seconds: float = 0.0
    acquisitions: int = 0
    max_wait: float = 0.0
    losses_reported: int = 0
    fenced_out: int = 0
    errors: int = 0
    faults: Counter[str] = dataclasses.field(default_factory=Counter)
    crashes: list[str] = dataclasses.field(default_factory=list)
    violations: list[str] = dataclasses.field(default_factory=list)


class Soak:
    """One backend's run: its workers, its proxy, its fault injector."""

    def __init__(self, target: Target, args: argparse.Namespace, directory: pathlib.Path,
                 rng: random.Random) -> None:
        self.target = target
        self.args = args
        self.rng = rng
        self.history = directory / "history"
        self.history.mkdir(parents=True)
        self.store = FencedStore(directory / "store")
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.names = [f"soak-{index}" for index in range(args.names)]
        self.proxy = target.proxy() if target.server is not None else None
        self.workers: dict[int, subprocess.Popen[str]] = {}
        self.spawned = 0
        self.outcome = Outcome(target.backend)
        self.observer = GroupObserver(target.url(), f"soak-{rng.random()}", target.lease) \
            if conch.Coordinator(target.url()).capabilities.groups else None

    def run(self, seconds: float) -> Outcome:
        """Contend and inject faults for ``seconds``; then check everything."""
        started = time.monotonic()
        stop_at = started + seconds
        next_fault = started + self.rng.uniform(*FAULT_EVERY)
        try:
            while time.monotonic() < stop_at:
                self._collect_finished()
                while len(self.workers) < self.args.processes:
                    self._spawn(min(ROUND_SECONDS, max(1.0, stop_at - time.monotonic())))
                if time.monotonic() >= next_fault:
                    self._inject_fault()
                    next_fault = time.monotonic() + self.rng.uniform(*FAULT_EVERY)
                time.sleep(0.2)
            deadline = time.monotonic() + ROUND_SECONDS + 30
            while self.workers and time.monotonic() < deadline:
                self._collect_finished()
                time.sleep(0.2)
        finally:
            for process in self.workers.values():
                _kill(process)
            if self.proxy is not None:
                self.proxy.close()
        self.outcome.seconds = time.monotonic() - started
        if self.observer is not None:
            self.outcome.violations += self.observer.finish()
        self._check()
        return self.outcome

    def _spawn(self, seconds: float) -> None:
        index = self.spawned
        self.spawned += 1
        via = self.proxy if self.proxy is not None and index % 2 else None
        process = spawn(self.target.url(via=via), "contend", f"worker-{index}",
                        str(self.history), str(self.store.directory), f"{seconds:.1f}",
                        str(self.args.hold), *self.names, log=self.logs / f"worker-{index}.log")
        if read_line(process, 60) != "ready":
            _kill(process)
            self.outcome.errors += 1
            return
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        self.workers[index] = process

    def _collect_finished(self) -> None:
        for index, process in list(self.workers.items()):
            if process.poll() is None:
                continue
            del self.workers[index]
            while line := read_line(process, 0):
                if line.startswith("done "):
                    tally = Tally(**json.loads(line.removeprefix("done ")))
                    self.outcome.max_wait = max(self.outcome.max_wait, tally.max_wait)
                    self.outcome.errors += tally.errors
                    self.outcome.fenced_out += tally.fenced_out
            errors = process.communicate()[1]
            if process.returncode not in (0, -signal.SIGKILL):  # SIGKILL: a fault we injected
                last_words = errors.strip().splitlines() or [f"exit {process.returncode}"]
                self.outcome.crashes.append(last_words[-1])

    def _inject_fault(self) -> None:
        faults: dict[str, Callable[[], None]] = {
            "worker killed": self._kill_worker,
            "worker frozen": self._freeze_worker,
        }
        if self.target.server is not None:
            faults |= {"server restarted": self._restart_server,
                       "server frozen": self._freeze_server,
                       "connections reset": self._reset_connections,
                       "partition": self._partition}
        kind = self.rng.choice(sorted(faults))
        faults[kind]()
        self.outcome.faults[kind] += 1

    def _some_worker(self) -> subprocess.Popen[str] | None:
        return self.rng.choice(list(self.workers.values())) if self.workers else None

    def _kill_worker(self) -> None:
        if worker := self._some_worker():
            worker.send_signal(signal.SIGKILL)

    def _freeze_worker(self) -> None:
        if worker := self._some_worker():
            worker.send_signal(signal.SIGSTOP)
            time.sleep(self._past_lease())
            worker.send_signal(signal.SIGCONT)

    def _restart_server(self) -> None:
        assert self.target.server is not None
        self.target.server.restart()

    def _freeze_server(self) -> None:
        self.target.pause()
        time.sleep(self._past_lease())
        self.target.resume()

    def _reset_connections(self) -> None:
        assert self.proxy is not None
        self.proxy.cut()

    def _partition(self) -> None:
        assert self.proxy is not None
        self.proxy.partition()
        time.sleep(self._past_lease())
        self.proxy.heal()

    def _past_lease(self) -> float:
        return (self.target.lease or 2.0) + 1.0

    def _check(self) -> None:
        sections = load(self.history)
        self.outcome.acquisitions = len(sections)
        self.outcome.losses_reported = sum(section.lost for section in sections)
        found = history_violations(sections)
        found += fenced_counter_violations(self.store.writes(), sections)
        secret = self.target.password
        if secret:
            for log in self.logs.iterdir():
                if secret in log.read_text(errors="replace"):
                    found.append(f"the password shows in {log.name}")
        self.outcome.violations += found


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.kill()
    process.communicate()


def report(outcomes: Sequence[Outcome], args: argparse.Namespace) -> str:
    """The outcomes as a markdown table, with the settings of the run."""
    lines = [
        f"soak: {args.processes} processes, {args.names} names, holds up to {args.hold:g} s, "
        f"{args.minutes:g} min per backend, seed {args.seed}",
        "",
        "| backend | minutes | acquisitions | max wait | losses reported | fenced out "
        "| errors seen | worker crashes | faults injected | violations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        faults = ", ".join(f"{kind} x{count}" for kind, count in sorted(outcome.faults.items()))
        lines.append(
            f"| {outcome.backend} | {outcome.seconds / 60:.1f} | {outcome.acquisitions} "
            f"| {outcome.max_wait:.2f} s | {outcome.losses_reported} | {outcome.fenced_out} "
            f"| {outcome.errors} | {len(outcome.crashes)} | {faults or '-'} "
            f"| {len(outcome.violations)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak on each backend asked for; 1 if any violation was found."""
    args = _parser().parse_args(argv)
    rng = random.Random(args.seed)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="conch-soak-") as scratch:
        if args.keep:
            scratch = args.keep
        for backend in args.backends:
            print(f"soak: {backend} for {args.minutes:g} min ...", file=sys.stderr, flush=True)
            directory = pathlib.Path(scratch) / backend
            server = None if backend == "file" else start_server(backend)
            try:
                target = Target(backend, server, local_url=f"file://{directory / 'locks'}")
                outcome = Soak(target, args, directory, rng).run(args.minutes * 60)
            finally:
                if server is not None:
                    server.cleanup()
            for violation in outcome.violations[:20]:
                print(f"  VIOLATION {violation}", file=sys.stderr)
            for crash in outcome.crashes[:5]:
                print(f"  worker crashed: {crash}", file=sys.stderr)
            outcomes.append(outcome)
    print(report(outcomes, args))
    return 1 if any(outcome.violations for outcome in outcomes) else 0


def _backends(text: str) -> list[str]:
    chosen = text.split(",")
    unknown = sorted(set(chosen) - set(PROCESS_BACKENDS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown backend(s) {', '.join(unknown)}; known: {', '.join(PROCESS_BACKENDS)}")
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0,
                        help="minutes per backend (default: 2)")
    parser.add_argument("--backends", type=_backends, default=list(PROCESS_BACKENDS),
                        help=f"comma-separated (default: {','.join(PROCESS_BACKENDS)})")
    parser.add_argument("--processes", type=int, default=24,
                        help="worker processes at any time (default: 24)")
    parser.add_argument("--names", type=int, default=200, help="lock names (default: 200)")
    parser.add_argument("--hold", type=float, default=0.05,
                        help="seconds a lock is held, at most (default: 0.05)")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the histories, counters and logs in DIR (default: removed)")
    parser.add_argument("--seed", type=int, default=int(time.time()),
                        help="seed of the fault schedule (default: the time)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
