"""``python -m benchmarks.elections [--quick] [--out DIR] [BACKEND...]``: leadership hand-over.

On each backend, conch's election beside kazoo's ``Election``, a lease-based election by
hand on etcd and tooz's ``watch_elected_as_leader`` (see :mod:`benchmarks.election_contenders`):
the time from a resignation, and from a SIGKILL of the leader, to a waiting candidate in
another process leading (:mod:`benchmarks.election_rounds`). Prints the markdown report and
writes ``<out>/elections.md`` and ``elections.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from tests.servers import etcd, memcached, redis

from benchmarks import election_report, report, run
from benchmarks.aio_backends import BACKENDS as AIO_BACKENDS
from benchmarks.contenders import etcd as etcd_contenders
from benchmarks.contenders import memcached as memcached_contenders
from benchmarks.contenders import mysql as mysql_contenders
from benchmarks.contenders import postgresql as postgresql_contenders
from benchmarks.contenders import zookeeper as zookeeper_contenders
from benchmarks.election_contenders import (
    Candidate,
    Conch,
    EtcdLease,
    KazooElection,
    Tooz,
    lease_seconds,
)
from benchmarks.election_rounds import HandOvers, hand_overs, outcome_or_error
from benchmarks.harness import Latency, MeasurementFailed, in_children
from conch.backends.loader import backend_class
from conch.url import parse_url

_SLACK_S = 60.0  # set-up and shut-down allowance on top of a measurement's own time
_ROUND_S = 20.0  # the longest a process may take to set up, campaign or win, beyond the lease


@dataclasses.dataclass(frozen=True)
class Settings:
    """How many rounds of each kind, and the delays before the leader resigns or dies."""

    resign_rounds: int = 30
    """Resignations per candidate library, in ``blocks`` taken in turn by all of them."""
    blocks: int = 3
    resign_delay_ms: tuple[float, float] = (50.0, 150.0)
    """From the challenger's campaign to the resignation: drawn uniformly, the same sequence
    for every library of a block; it spans tooz's poll interval."""
    kill_rounds: int = 10
    """SIGKILLs per library; the libraries of a backend run their rounds at the same time
    (each on an election of its own), as each round waits out a lease."""
    kill_delay_ms: tuple[float, float] = (100.0, 1100.0)
    """From the challenger's campaign to the kill: it spans a renewal period (a third of the
    3 s lease), so that the kill falls at a random point between two renewals."""

    def quick(self) -> Settings:
        """A smoke run: about a quarter of the rounds."""
        return dataclasses.replace(self, resign_rounds=6, kill_rounds=3)


@dataclasses.dataclass(frozen=True)
class Backend:
    """Where the candidates of one backend meet."""

    name: str
    target: Callable[[], AbstractContextManager[str]]
    """Starts the server the way ``benchmarks.run`` does; yields conch's URL for it."""
    lease: str
    """The query that bounds a dead leader's term (the test fixtures'), ``""``: none."""
    candidates: tuple[type[Candidate], ...]


BACKENDS = {
    "file": Backend("file", AIO_BACKENDS["file"].target, "", (Conch,)),
    "redis": Backend("redis", AIO_BACKENDS["redis"].target, f"ttl={redis.SHORT_TTL}",
                     (Conch, Tooz)),
    "etcd": Backend("etcd", etcd_contenders.target, f"ttl={etcd.SHORT_TTL}", (Conch, EtcdLease)),
    # The zookeeper fixture keeps the default 10 s session: 3 s, as the others' leases.
    "zookeeper": Backend("zookeeper", zookeeper_contenders.target, "timeout=3",
                         (Conch, KazooElection, Tooz)),
    "postgresql": Backend("postgresql", postgresql_contenders.target, "", (Conch,)),
    "mysql": Backend("mysql", mysql_contenders.target, "", (Conch,)),
    "memcached": Backend("memcached", memcached_contenders.target,
                         f"ttl={memcached.SHORT_TTL}", (Conch, Tooz)),
}


@dataclasses.dataclass
class CandidateResult:
    """One library's hand-overs on one backend; a failed measurement leaves an error."""

    name: str
    distribution: str
    version: str
    resigns: str
    resign: Latency | None = None
    resign_samples_ms: list[float] = dataclasses.field(default_factory=list)
    kill: Latency | None = None
    kill_samples_ms: list[float] = dataclasses.field(default_factory=list)
    early: int = 0
    """Rounds where the challenger led before the leader resigned or died."""
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BackendResult:
    """One backend's run."""

    name: str
    target: str
    lease: str
    session_bound: bool
    """conch's backend declares ``session_bound``: a dead leader's term ends at once."""
    settings: Settings
    candidates: dict[str, CandidateResult]


def main(argv: Sequence[str] | None = None) -> int:
    args = run.parse_backend_arguments(
        "elections", "Leadership hand-over time: conch's elections beside their peers'.",
        list(BACKENDS), "a quarter of the rounds", argv)
    settings = Settings().quick() if args.quick else Settings()
    out = args.out or (None if args.quick else run.RESULTS_DIR)
    environment = run.describe_environment("benchmarks.elections")
    started = time.monotonic()
    sections = []
    for name in args.backends:
        backend = BACKENDS[name]
        with backend.target() as target:
            url = target if not backend.lease else (
                f"{target}{'&' if '?' in target else '?'}{backend.lease}")
            sections.append(measure(backend, url, settings))
    environment["load_after"] = os.getloadavg()
    environment["duration_s"] = round(time.monotonic() - started)
    report.publish(out, "elections", environment, sections,
                   election_report.markdown(environment, sections))
    return 0


def measure(backend: Backend, url: str, settings: Settings) -> BackendResult:
    """Resignations block by block, each library in turn; then the kills, all at once."""
    results = {c.name: CandidateResult(c.name, c.distribution,
                                       run.installed_version(c.distribution), c.resigns)
               for c in backend.candidates}
    drive = functools.partial(_drive, backend.name, url,
                              lease_seconds(url) + _ROUND_S if backend.lease else _ROUND_S)
    resigned: dict[str, list[HandOvers]] = {c.name: [] for c in backend.candidates}
    for block in range(1, settings.blocks + 1):
        delays = _delays(settings.resign_delay_ms, settings.resign_rounds // settings.blocks,
                         block)
        for candidate in backend.candidates:
            [outcome] = drive(False, delays, [candidate], f"resign {block}")
            if isinstance(outcome, HandOvers):
                resigned[candidate.name].append(outcome)
            else:
                results[candidate.name].errors[f"resign {block}"] = outcome
    killed = drive(True, _delays(settings.kill_delay_ms, settings.kill_rounds, 0),
                   backend.candidates, "kill")
    for candidate, kill in zip(backend.candidates, killed, strict=True):
        result = results[candidate.name]
        runs = resigned[candidate.name]
        samples = [d for handed in runs for d in handed.durations_ns]
        if samples and not result.errors:  # a figure from fewer blocks would not compare
            result.resign, result.resign_samples_ms = Latency.of(samples), _ms(samples)
        if isinstance(kill, str):
            result.errors["kill"] = kill
        else:
            runs.append(kill)
            if kill.durations_ns:
                result.kill = Latency.of(kill.durations_ns)
                result.kill_samples_ms = _ms(kill.durations_ns)
        result.early = sum(handed.early for handed in runs)
    described = run.describe_target(parse_url(url).path if backend.name == "file" else url)
    session_bound = backend_class(parse_url(url)).capabilities.session_bound
    return BackendResult(backend.name, described, backend.lease, session_bound, settings,
                         results)


def _drive(backend: str, url: str, timeout: float, kill: bool, delays: list[float],
           candidates: Sequence[type[Candidate]], what: str) -> list[HandOvers | str]:
    """Each candidate library's rounds, in drivers forked at the same time; per library
    its hand-overs or the text of its failure. A round may take ``timeout`` s."""
    began = time.monotonic()
    jobs = [functools.partial(outcome_or_error, functools.partial(
        hand_overs, candidate, url, kill, delays, timeout)) for candidate in candidates]
    try:
        outcomes: list[HandOvers | str] = in_children(
            backend, jobs, _SLACK_S + sum(delays) + len(delays) * timeout)
    except MeasurementFailed as exc:  # a driver overran or died
        outcomes = [str(exc)] * len(jobs)
    for candidate, outcome in zip(candidates, outcomes, strict=True):
        if isinstance(outcome, str):
            brief = f"FAILED: {report.last_line(outcome)}"
        elif outcome.durations_ns:
            brief = f"p50 {Latency.of(outcome.durations_ns).p50_us / 1000:.1f} ms"
        else:
            brief = "no round counted"
        run.progress(f"{backend:<10} {what:<9} {candidate.name:<22} {brief}"
                     f"  [{time.monotonic() - began:.1f} s]")
    return outcomes


def _delays(range_ms: tuple[float, float], rounds: int, seed: int) -> list[float]:
    chooser = random.Random(seed)
    return [chooser.uniform(*range_ms) / 1000 for _ in range(rounds)]


def _ms(durations_ns: Sequence[int]) -> list[float]:
    return [round(duration / 1e6, 2) for duration in durations_ns]


if __name__ == "__main__":
    sys.exit(main())
