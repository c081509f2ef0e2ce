"""One server's results: targets checked, a markdown report and the raw JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.contenders.base import Settings, Target
from benchmarks.harness import ContenderResult

Results = Mapping[str, ContenderResult]


@dataclasses.dataclass
class TargetOutcome:
    """A target checked against one run: ``met`` is ``None`` when a figure is missing."""

    text: str
    met: bool | None
    measured: str


def metric(result: ContenderResult | None, key: str) -> float | None:
    """The figure named ``key`` ("uncontended p50", "handoff p99", "throughput 4")."""
    kind, _, detail = key.partition(" ")
    if result is None:
        return None
    if kind == "uncontended" and result.uncontended is not None:
        return float(getattr(result.uncontended, f"{detail}_us"))
    if kind == "handoff" and result.handoff is not None:
        return float(getattr(result.handoff.latency, f"{detail}_us"))
    if kind == "throughput" and int(detail) in result.contended:
        return result.contended[int(detail)].total_per_s
    return None


def evaluate(target: Target, results: Results) -> TargetOutcome:
    """Check ``target`` on figures of this run."""
    value = metric(results.get(target.contender), target.metric)
    peer_metric = target.peer_metric or target.metric
    reference = 1.0 if target.peer is None else metric(results.get(target.peer), peer_metric)
    if value is None or not reference:
        return TargetOutcome(target.text, None, "not measured")
    ratio = value / reference
    met = ratio >= target.bound if target.higher_is_better else ratio <= target.bound
    if target.peer is None:
        measured = f"{target.contender} {_figure(target.metric, value)}"
        return TargetOutcome(target.text, met, measured)
    return TargetOutcome(
        target.text, met,
        f"{ratio:.2f}x ({target.contender} {_figure(target.metric, value)}, "
        f"{target.peer} {_figure(peer_metric, reference)})",
    )


def write(directory: str, server: str, document: dict[str, Any], markdown: str) -> list[str]:
    """Write ``<server>.md`` and ``<server>.json`` into ``directory``; return their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f"{server}.{ext}") for ext in ("md", "json")]
    with open(paths[0], "w", encoding="utf-8") as md:
        md.write(markdown)
    with open(paths[1], "w", encoding="utf-8") as raw:
        json.dump(document, raw, indent=1, ensure_ascii=False)
        raw.write("\n")
    return paths


def publish(out: str | None, benchmark: str, environment: Mapping[str, Any],
            sections: Sequence[Any], markdown_text: str) -> None:
    """Print the report; with ``out``, also write it and the raw figures (``sections``:
    dataclasses, one per backend) to ``<out>/<benchmark>.md`` and ``.json``."""
    print(markdown_text)
    if out is None:
        return
    raw = {"benchmark": benchmark, "environment": dict(environment),
           "backends": [dataclasses.asdict(section) for section in sections]}
    for path in write(out, benchmark, raw, markdown_text):
        print(f"wrote {path}", file=sys.stderr, flush=True)


def document(
    server: str,
    environment: Mapping[str, Any],
    settings: Settings,
    results: Results,
    outcomes: Sequence[TargetOutcome],
) -> dict[str, Any]:
    """Everything recorded, as JSON-ready data."""
    return {
        "server": server,
        "environment": dict(environment),
        "settings": dataclasses.asdict(settings),
        "targets": [dataclasses.asdict(outcome) for outcome in outcomes],
        "contenders": [dataclasses.asdict(result) for result in results.values()],
    }


def markdown(
    server: str,
    environment: Mapping[str, Any],
    settings: Settings,
    results: Results,
    outcomes: Sequence[TargetOutcome],
) -> str:
    """The human report: context, targets, then one table per measurement."""
    env = environment
    lines = [
        f"# {server} benchmark",
        "",
        f"Recorded {env['date']} with `{env['command']}` (conch at {env['conch_commit']}).",
        f"{env['platform']}, {env['cpus']} CPUs, {env['python']}; target: {env['target']}.",
        f"Load average (1/5/15 min): {load_text(env['load_before'])} before the run, "
        f"{load_text(env['load_after'])} after it (which counts the run's own processes).",
        f"Each contender ran in its own fresh processes: {settings.iterations} uncontended "
        f"cycles and {settings.handoff_rounds} hand-offs (holds of "
        f"{settings.hold_ms[0]:g}-{settings.hold_ms[1]:g} ms), both in {settings.blocks} "
        f"blocks taken in turn by all contenders (in reverse order every other block); "
        f"{settings.duration_s:g} s of contended runs per process count, in {settings.blocks} "
        "blocks as well. Method: `benchmarks/README.md`.",
    ]
    lines += busy_warning(env)
    if outcomes:
        lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {o.text} | {o.measured} | {_verdict(o.met)} |" for o in outcomes]
    lines += _latency_table(results) + _throughput_table(results, settings)
    failures = [(r.name, m, e) for r in results.values() for m, e in r.errors.items()]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {name}, {what}: `{last_line(error)}`" for name, what, error in failures]
    return "\n".join(lines) + "\n"


def _latency_table(results: Results) -> list[str]:
    lines = [
        "", "## Latency (µs)", "",
        "Uncontended: one process, acquire + release. Hand-off: from the holder's "
        "release to the blocked waiter's acquire returning.", "",
        "| contender | version | uncontended p50 | p99 | hand-off p50 | p99 | mean |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for result in results.values():
        uncontended, handoff = result.uncontended, result.handoff
        cells = [_name(result), result.version or "-"]
        cells += ([us(uncontended.p50_us), us(uncontended.p99_us)] if uncontended
                  else ["failed"] * 2)
        cells += ([us(handoff.latency.p50_us), us(handoff.latency.p99_us),
                   us(handoff.latency.mean_us)] if handoff else ["failed"] * 3)
        lines.append("| " + " | ".join(cells) + " |")
    late = {r.name: r.handoff.late_waiters for r in results.values()
            if r.handoff and r.handoff.late_waiters}
    if late:
        lines += ["", "Hand-offs not counted because the waiter reached acquire() only after "
                  "the release: " + ", ".join(f"{name} {n}" for name, n in late.items()) + "."]
    return lines


def _throughput_table(results: Results, settings: Settings) -> list[str]:
    lines = [
        "", "## Contended throughput", "",
        f"N processes loop acquire + release on one name: {settings.blocks} blocks of "
        f"{settings.duration_s / settings.blocks:.3g} s, taken in turn by all contenders; "
        "min-max over every process of every block. Jain's index (the blocks' mean) is 1 "
        "when every process got the same share, 1/N when one got all. "
        "Exclusive: a counter incremented unsynchronised inside every hold came out exact.", "",
        "| processes | contender | acquisitions/s | per process/s (min-max) | Jain | exclusive |",
        "|--:|---|--:|--:|--:|---|",
    ]
    for count in settings.process_counts:
        for result in results.values():
            run = result.contended.get(count)
            if run is None:
                lines.append(f"| {count} | {_name(result)} | failed | | | |")
                continue
            per_process = [c / run.duration_s for c in run.counts]
            lines.append(
                f"| {count} | {_name(result)} | {run.total_per_s:,.0f} | "
                f"{run.total_per_s / count:,.0f} ({min(per_process):,.0f}-"
                f"{max(per_process):,.0f}) | {run.jain:.2f} | {'yes' if run.excluded else 'NO'} |"
            )
    return lines


def _name(result: ContenderResult) -> str:
    return f"{result.name} (floor)" if result.floor else result.name


def us(value: float) -> str:
    """Microseconds (or milliseconds) for a table: no decimals from 100 on."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _figure(metric_key: str, value: float) -> str:
    return f"{value:,.0f} acq/s" if metric_key.startswith("throughput") else f"{us(value)} µs"


def busy_warning(environment: Mapping[str, Any]) -> list[str]:
    """A paragraph saying so when other work kept more than half the CPUs busy before the run."""
    load, cpus = environment["load_before"][0], environment["cpus"]
    if load <= cpus / 2:
        return []
    return ["", f"**Other work kept the machine busy (1-min load {load:.2f} on {cpus} CPUs "
            "before the run): absolute figures are noisy; the ratios measured side by side "
            "are the meaningful part.**"]


def load_text(load: Sequence[float]) -> str:
    """A load average (1/5/15 min)."""
    return " / ".join(f"{value:.2f}" for value in load)


def _verdict(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[met]


def last_line(error: str) -> str:
    """The last line of an error's text (its exception)."""
    lines = error.strip().splitlines()
    return lines[-1] if lines else "?"
