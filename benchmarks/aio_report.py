"""The markdown report of ``python -m benchmarks.aio``: context, then one table per backend."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from benchmarks.harness import Latency
from benchmarks.report import busy_warning, last_line, load_text, us

if TYPE_CHECKING:
    from benchmarks.aio import AioResult, BackendResult


def markdown(environment: Mapping[str, Any], sections: Sequence[BackendResult]) -> str:
    """The human report."""
    env = environment
    lines = [
        "# asyncio benchmark",
        "",
        f"Recorded {env['date']} with `{env['command']}` (conch at {env['conch_commit']}).",
        f"{env['platform']}, {env['cpus']} CPUs, {env['python']}. Load average (1/5/15 min): "
        f"{load_text(env['load_before'])} before the run, {load_text(env['load_after'])} after it "
        "(which counts the run's own processes).",
    ]
    lines += busy_warning(env)
    lines += [
        "",
        "Each measurement of a contender ran on a new event loop in a freshly forked "
        "process, in blocks that all contenders of a backend took in turn. "
        "Method and contenders: `benchmarks/README.md` (asyncio).",
        "",
        "- **cycle**: one coroutine, `await acquire(); await release()`; cycles/s = 1 / mean.",
        "- **hand-off**: from the holder's release call to the acquire of a coroutine of the "
        "other member (same loop), which was waiting for it, returning.",
        "- **crowd**: coroutines of one member waiting on one name held by the other member: "
        "the most threads of the process and client connections of the server while they "
        "wait, minus those before; then the time from the release until all have passed "
        "through (acquire, release) one by one.",
    ]
    for section in sections:
        lines += _section(section)
    return "\n".join(lines) + "\n"


def _section(section: BackendResult) -> list[str]:
    settings = section.settings
    native = ("native asyncio (the backend declares `native_async`)" if section.native_async
              else "its thread path (the backend does not declare `native_async` yet)")
    lines = [
        "", f"## {section.name}", "",
        f"Target: {section.target}. `conch.aio` used {native}. "
        f"{settings.iterations} cycles, {settings.handoff_rounds} hand-offs (holds of "
        f"{settings.hold_ms[0]:g}-{settings.hold_ms[1]:g} ms, a tenth of each block not "
        f"counted), {settings.blocks} crowds of {settings.waiters} waiters (each waited at "
        f"least {settings.settle_s:g} s), in {settings.blocks} blocks.", "",
        f"| contender | version | a waiter waits | cycle p50 µs | p99 | cycles/s "
        f"| hand-off p50 µs | p99 | {settings.waiters} waiters: + threads | + connections "
        "| all through, ms (median, min-max) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result in section.contenders.values():
        lines.append("| " + " | ".join(_row(result, section.native_async)) + " |")
    broken = [r.name for r in section.contenders.values()
              if r.handoff_overlaps or not all(c.exclusive for c in r.crowds)]
    if broken:
        lines += ["", f"**Not exclusive** (two holders at once): {', '.join(broken)}."]
    if section.missing:
        lines += ["", "Not measured: " + "; ".join(section.missing) + "."]
    failures = [(r.name, what, error) for r in section.contenders.values()
                for what, error in r.errors.items()]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- {name}, {what}: `{last_line(error)}`" for name, what, error in failures]
    return lines


def _row(result: AioResult, native: bool) -> list[str]:
    waits = result.waits
    if result.name == "conch.aio":
        waits = "natively on the loop" if native else "threads (not native_async)"
    cells = [f"{result.name} (floor)" if result.floor else result.name, result.version or "-",
             waits]
    cells += _latency(result.uncontended)
    cells.append(f"{result.cycles_per_s:,.0f}" if result.cycles_per_s else "failed")
    cells += _latency(result.handoff)
    crowds = result.crowds
    if not crowds or "crowd" in " ".join(result.errors):
        return [*cells, "failed", "failed", "failed"]
    connections = [c.extra_connections for c in crowds if c.extra_connections is not None]
    through = [c.through_ns / 1e6 for c in crowds]
    return [
        *cells,
        str(max(c.extra_threads for c in crowds)),
        str(max(connections)) if connections else "-",
        f"{us(statistics.median(through))} ({us(min(through))}-{us(max(through))})",
    ]


def _latency(latency: Latency | None) -> list[str]:
    return [us(latency.p50_us), us(latency.p99_us)] if latency else ["failed"] * 2
