"""``python -m benchmarks.aio [--quick] [--out DIR] [BACKEND...]``: conch from asyncio.

Measures, per backend, conch.aio (native and on its thread path), the sync API
called from a coroutine, and what asyncio users pick instead (see
:mod:`benchmarks.aio_contenders`), side by side: every measurement in blocks that
all contenders take in turn, each block in a freshly forked process. Prints the
markdown report and writes ``<out>/aio.md`` and ``aio.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import aio_measure, aio_report, report
from benchmarks.aio_backends import BACKENDS, AioBackend, AioSettings
from benchmarks.aio_contenders import AsyncContender
from benchmarks.aio_measure import CrowdRun, HandoffRun
from benchmarks.harness import Latency, MeasurementFailed, in_children
from benchmarks.run import (
    RESULTS_DIR,
    describe_environment,
    describe_target,
    installed_version,
    parse_backend_arguments,
    progress,
)
from conch.backends.loader import backend_class
from conch.url import parse_url

_SLACK_S = 30.0  # set-up and shut-down allowance on top of a measurement's own time


@dataclasses.dataclass
class AioResult:
    """Everything measured for one contender on one backend; failures leave an error."""

    name: str
    version: str
    waits: str
    floor: bool
    uncontended: Latency | None = None
    cycles_per_s: float | None = None
    handoff: Latency | None = None
    handoff_overlaps: int = 0
    handoff_samples_us: list[float] = dataclasses.field(default_factory=list)
    crowds: list[CrowdRun] = dataclasses.field(default_factory=list)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BackendResult:
    """One backend's run."""

    name: str
    target: str
    native_async: bool
    """Whether the backend declared ``native_async`` (what ``conch.aio`` used)."""
    settings: AioSettings
    contenders: dict[str, AioResult]
    missing: tuple[str, ...]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_backend_arguments(
        "aio", "Benchmark conch.aio against the sync API and asyncio lock libraries.",
        list(BACKENDS), "about a tenth of the work", argv)
    out = args.out or (None if args.quick else RESULTS_DIR)
    environment = describe_environment("benchmarks.aio")
    sections = []
    for name in args.backends:
        backend = BACKENDS[name]
        settings = backend.settings.quick() if args.quick else backend.settings
        with backend.target() as target:
            sections.append(measure(backend, target, settings))
    environment["load_after"] = os.getloadavg()
    report.publish(out, "aio", environment, sections,
                   aio_report.markdown(environment, sections))
    return 0


def measure(backend: AioBackend, target: str, settings: AioSettings) -> BackendResult:
    """Every measurement of ``settings`` for each contender of ``backend``, block by block."""
    contenders = backend.contenders
    results = {c.name: AioResult(c.name, installed_version(c.distribution), c.waits, c.floor)
               for c in contenders}

    def run(what: str, contender: type[AsyncContender], timeout: float,
            measurement: Callable[[AsyncContender], Any]) -> Any:
        started = time.monotonic()
        job = functools.partial(aio_measure.in_loop, contender, target, measurement)
        try:
            [outcome] = in_children(contender.name, [job], _SLACK_S + timeout)
        except MeasurementFailed as exc:
            results[contender.name].errors[what] = str(exc)
            progress(f"{backend.name:<10} {what:<14} {contender.name:<24} FAILED: {exc}")
            return None
        progress(f"{backend.name:<10} {what:<14} {contender.name:<24} {_brief(outcome)}"
                 f"  [{time.monotonic() - started:.1f} s]")
        return outcome

    blocks = range(1, settings.blocks + 1)
    durations: dict[str, list[int]] = {c.name: [] for c in contenders}
    for block in blocks:
        for contender in contenders:
            cycles = run(f"uncontended {block}", contender, 0,
                         functools.partial(aio_measure.cycles,
                                           settings.iterations // settings.blocks))
            durations[contender.name].extend(cycles or ())
    handoffs: dict[str, list[HandoffRun]] = {c.name: [] for c in contenders}
    for block in blocks:
        chooser = random.Random(block)  # the same holds for every contender in a block
        holds = [chooser.uniform(*settings.hold_ms) / 1000
                 for _ in range(settings.handoff_rounds // settings.blocks)]
        for contender in contenders:
            pingpong = run(f"hand-off {block}", contender, sum(holds) + len(holds) * 0.2,
                           functools.partial(aio_measure.handoff, holds))
            if pingpong is not None:
                handoffs[contender.name].append(pingpong)
    counter = (functools.partial(backend.connections, target)
               if backend.connections is not None else None)
    for block in blocks:
        for contender in contenders:
            crowd = run(f"crowd {block}", contender, settings.waiters * 0.2,
                        functools.partial(aio_measure.crowd, settings, counter))
            if crowd is not None:
                results[contender.name].crowds.append(crowd)
    for name, result in results.items():
        failed = " ".join(result.errors)  # a figure from fewer blocks would not compare
        if durations[name] and "uncontended" not in failed:
            result.uncontended = Latency.of(durations[name])
            result.cycles_per_s = len(durations[name]) * 1e9 / sum(durations[name])
        if handoffs[name] and "hand-off" not in failed:
            samples = [d for run in handoffs[name] for d in run.durations_ns]
            result.handoff = Latency.of(samples)
            result.handoff_samples_us = [round(d / 1000, 1) for d in samples]
            result.handoff_overlaps = sum(run.overlaps for run in handoffs[name])
    described = describe_target(parse_url(target).path if backend.name == "file" else target)
    native = backend_class(parse_url(target)).capabilities.native_async
    return BackendResult(backend.name, described, native, settings, results, backend.missing)


def _brief(outcome: Any) -> str:
    if isinstance(outcome, HandoffRun):
        outcome = outcome.durations_ns
    if isinstance(outcome, list):
        latency = Latency.of(outcome)
        return f"p50 {latency.p50_us:.1f} µs, p99 {latency.p99_us:.1f} µs"
    if isinstance(outcome, CrowdRun):
        connections = "" if outcome.extra_connections is None else (
            f", +{outcome.extra_connections} connections")
        return (f"+{outcome.extra_threads} threads{connections}, all through in "
                f"{outcome.through_ns / 1e6:.1f} ms")
    return ""


if __name__ == "__main__":
    sys.exit(main())
