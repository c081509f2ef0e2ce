"""``python -m benchmarks.run SERVER... [--quick] [--out DIR] [--only NAME,...]``.

Measures every contender of each server side by side in one run (measurement by
measurement, so load changes hit all of them alike), prints the markdown report
and writes ``<out>/<server>.md`` and ``<server>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, TypeVar

from benchmarks import harness, report
from benchmarks.contenders import load, servers
from benchmarks.contenders.base import Contender, Settings
from benchmarks.harness import ContenderResult
from conch import ConchError
from conch.url import parse_url

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")
_T = TypeVar("_T")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = args.out or (None if args.quick else RESULTS_DIR)
    for name in args.servers:
        server = load(name)
        settings = server.settings.quick() if args.quick else server.settings
        contenders = [c for c in server.contenders if not args.only or c.name in args.only]
        environment = describe_environment("benchmarks.run")
        with server.target() as target:
            environment["target"] = describe_target(target)
            results = measure(contenders, target, settings)
        environment["load_after"] = os.getloadavg()
        outcomes = [report.evaluate(goal, results) for goal in server.targets]
        text = report.markdown(name, environment, settings, results, outcomes)
        print(text)
        if out is not None:
            document = report.document(name, environment, settings, results, outcomes)
            for path in report.write(out, name, document, text):
                progress(f"wrote {path}")
    return 0


def measure(
    contenders: Sequence[type[Contender]], target: str, settings: Settings
) -> dict[str, ContenderResult]:
    """Every measurement of ``settings`` for each contender, one contender at a time.

    Uncontended, hand-off and contended work (at each process count) comes in blocks that
    every contender takes in turn, so that a change in the machine's load hits every
    contender alike.
    """
    results = {c.name: ContenderResult(c.name, installed_version(c.distribution), c.floor)
               for c in contenders}

    def run(what: str, contender: type[Contender], step: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            outcome = step()
        except harness.MeasurementFailed as exc:
            results[contender.name].errors[what] = str(exc)
            progress(f"{what:<16} {contender.name:<18} FAILED: {exc}")
            return None
        progress(f"{what:<16} {contender.name:<18} {_brief(outcome)}"
                 f"  [{time.monotonic() - started:.1f} s]")
        return outcome

    durations: dict[str, list[int]] = {c.name: [] for c in contenders}
    handoffs: dict[str, list[harness.HandoffRun]] = {c.name: [] for c in contenders}
    for block in range(1, settings.blocks + 1):
        for contender in in_turn(contenders, block):
            cycles = run(f"uncontended {block}/{settings.blocks}", contender, functools.partial(
                harness.uncontended, contender, target, settings.iterations // settings.blocks))
            durations[contender.name].extend(cycles or ())
    for block in range(1, settings.blocks + 1):
        holds = harness.hold_times(settings, settings.handoff_rounds // settings.blocks, block)
        for contender in in_turn(contenders, block):
            pingpong = run(f"hand-off {block}/{settings.blocks}", contender,
                           functools.partial(harness.handoff, contender, target, holds))
            if pingpong is not None:
                handoffs[contender.name].append(pingpong)
    for name, result in results.items():
        failed = " ".join(result.errors)  # a figure from fewer blocks would not compare
        if durations[name] and "uncontended" not in failed:
            result.uncontended = harness.Latency.of(durations[name])
        if handoffs[name] and "hand-off" not in failed:
            result.handoff = harness.Handoff.of(handoffs[name])
    seconds = settings.duration_s / settings.blocks
    for count in settings.process_counts:
        blocks: dict[str, list[harness.Throughput]] = {c.name: [] for c in contenders}
        for block in range(1, settings.blocks + 1):
            for contender in in_turn(contenders, block):
                throughput = run(
                    f"contended x{count} {block}/{settings.blocks}", contender,
                    functools.partial(harness.contended, contender, target, seconds, count))
                if throughput is not None:
                    blocks[contender.name].append(throughput)
        for name, runs in blocks.items():
            if len(runs) == settings.blocks:
                results[name].contended[count] = harness.combined(runs)
    return results


def in_turn(contenders: Sequence[_T], block: int) -> Sequence[_T]:
    """The order of ``block``: reversed every other block, so that no contender always runs
    first (right after a warm-up of the server, say) or last."""
    return contenders if block % 2 else contenders[::-1]


def _brief(outcome: Any) -> str:
    if isinstance(outcome, harness.HandoffRun):
        outcome = harness.Latency.of(outcome.durations_ns)
    elif isinstance(outcome, list):
        outcome = harness.Latency.of(outcome)
    if isinstance(outcome, harness.Latency):
        return f"p50 {outcome.p50_us:.1f} µs, p99 {outcome.p99_us:.1f} µs"
    if isinstance(outcome, harness.Throughput):
        return f"{outcome.total_per_s:,.0f} acq/s, Jain {outcome.jain:.2f}"
    return ""


def describe_environment(module: str) -> dict[str, Any]:
    """The run's context (date, command of ``python -m module``, commit, machine, load)."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "-m", module, *sys.argv[1:]]),
        "conch_commit": _git_commit(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count() or 1,
        "load_before": os.getloadavg(),
    }


def describe_target(target: str) -> str:
    """A URL without its credentials; a directory with its file system (which sets flock's cost)."""
    if not os.path.isdir(target):
        try:
            return parse_url(target).redacted()
        except ConchError:
            return target.partition(":")[0] + "://…"
    path = os.path.realpath(target)
    best = ("", "?")
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            _, mount_point, fs_type, *_ = line.split()
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, fs_type)
    return f"a temporary directory on {best[1]} ({path})"


def _git_commit() -> str:
    """HEAD, marked when src/ has uncommitted changes (read-only git commands)."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=10, check=False)

    try:
        head = git("rev-parse", "--short", "HEAD").stdout.strip()
        changed = git("diff", "--quiet", "HEAD", "--", "src").returncode == 1
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in src/' if changed else ''}"


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution`` ("" for none, else "not installed")."""
    if not distribution:
        return ""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="Benchmark conch against peer lock libraries."
    )
    parser.add_argument("servers", nargs="+", choices=servers(), metavar="SERVER",
                        help=f"one or more of: {', '.join(servers())}")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run, about a tenth of the work; writes only with --out")
    parser.add_argument("--out", metavar="DIR",
                        help=f"where to write <server>.md and .json (default: {RESULTS_DIR})")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), metavar="NAME,...",
                        help="measure only these contenders (targets need their peers)")
    return parser


def parse_backend_arguments(module: str, description: str, backends: Sequence[str],
                            quick: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """``python -m benchmarks.<module> [--quick] [--out DIR] [BACKEND...]``: the arguments,
    ``backends`` all of them when none is named; an unknown backend ends the program."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}",
                                     description=description)
    parser.add_argument("backends", nargs="*", metavar="BACKEND",
                        help=f"some of: {', '.join(backends)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run, {quick}; writes only with --out")
    parser.add_argument("--out", metavar="DIR",
                        help=f"where to write {module}.md and {module}.json "
                             f"(default: {RESULTS_DIR})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.backends if name not in backends]
    if unknown:
        parser.error(f"no such backend: {', '.join(unknown)}; known: {', '.join(backends)}")
    args.backends = args.backends or list(backends)
    return args


def progress(text: str) -> None:
    """A progress line on stderr."""
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
