"""The markdown report of ``python -m benchmarks.elections``: context, method, one table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from benchmarks.election_contenders import TOOZ_POLL_S
from benchmarks.harness import Latency
from benchmarks.report import busy_warning, last_line, load_text

if TYPE_CHECKING:
    from benchmarks.elections import BackendResult, CandidateResult

NOT_MEASURED = (
    "tooz 9.1's etcd3gw, file, postgresql and mysql drivers raise `tooz.NotImplemented` from "
    "`watch_elected_as_leader`, so tooz has no election on those backends."
)


def markdown(environment: Mapping[str, Any], sections: Sequence[BackendResult]) -> str:
    """The human report."""
    env = environment
    settings = sections[0].settings if sections else None
    lines = [
        "# Leadership hand-over benchmark",
        "",
        f"Recorded {env['date']} with `{env['command']}` (conch at {env['conch_commit']}), "
        f"in {env['duration_s']} s.",
        f"{env['platform']}, {env['cpus']} CPUs, {env['python']}. Load average (1/5/15 min): "
        f"{load_text(env['load_before'])} before the run, {load_text(env['load_after'])} after "
        "it (which counts the run's own processes).",
    ]
    lines += busy_warning(env)
    if settings is not None:
        lines += [
            "",
            "Each round: one process leads; a freshly forked candidate process sets up and "
            "campaigns; after a delay the leader resigns or is SIGKILLed; the time runs from "
            "the resignation call (or the `kill`) to the candidate's campaign returning, read "
            "with `time.monotonic_ns()` in both processes. The winner leads the next round. "
            "Method: `benchmarks/README.md` (elections).",
            "",
            f"- **resign → new leader**: {settings.resign_rounds} rounds per library, in "
            f"{settings.blocks} blocks taken in turn by the libraries of a backend; the leader "
            f"resigns {settings.resign_delay_ms[0]:g}-{settings.resign_delay_ms[1]:g} ms after "
            "the candidate began to campaign.",
            f"- **kill → new leader**: {settings.kill_rounds} rounds per library, the libraries "
            "of a backend at the same time (each on its own election); the leader is SIGKILLed "
            f"{settings.kill_delay_ms[0]:g}-{settings.kill_delay_ms[1]:g} ms after the candidate "
            "began to campaign. Where the backend is not session-bound this is the lease or "
            "session timeout in the bound column, from the leader's last renewal.",
            f"- **tooz** learns it won only from `run_watchers()`, called every {TOOZ_POLL_S:g} s "
            "as in tooz's own leader-election example (a non-blocking acquire of the group's "
            "leader lock each time), with the heart thread running. " + NOT_MEASURED,
            "",
            "| backend | library | a dead leader's bound | resign → new leader, ms: p50 | p90 "
            "| max | kill → new leader, ms: p50 | p90 | max |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|",
        ]
    for section in sections:
        for result in section.candidates.values():
            lines.append("| " + " | ".join(_row(section, result)) + " |")
    lines += _notes(sections)
    return "\n".join(lines) + "\n"


def _row(section: BackendResult, result: CandidateResult) -> list[str]:
    bound = (f"`{section.lease}`" if section.lease
             else "session-bound" if section.session_bound else "-")
    library = (f"{result.name} {result.version}" if result.name == result.distribution
               else f"{result.name} ({result.distribution} {result.version})")
    return [section.name, library, bound,
            *_figures(result.resign), *_figures(result.kill)]


def _figures(latency: Latency | None) -> list[str]:
    if latency is None:
        return ["failed"] * 3
    return [_ms(latency.p50_us), _ms(latency.p90_us), _ms(latency.max_us)]


def _ms(us: float) -> str:
    ms = us / 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.2f}"


def _notes(sections: Sequence[BackendResult]) -> list[str]:
    lines = ["", "How each library's leader resigns:", ""]
    seen: set[str] = set()
    for section in sections:
        for result in section.candidates.values():
            if result.name not in seen:
                seen.add(result.name)
                lines.append(f"- {result.name}: {result.resigns}")
    early = [f"{section.name} {result.name} {result.early}" for section in sections
             for result in section.candidates.values() if result.early]
    if early:
        lines += ["", "Rounds not counted because the candidate led before the leader resigned "
                  "or died (the leader's lease lapsed while it led): " + ", ".join(early) + "."]
    failures = [(section.name, result.name, what, error) for section in sections
                for result in section.candidates.values() for what, error in result.errors.items()]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- {backend} {name}, {what}: `{last_line(error)}`"
                  for backend, name, what, error in failures]
    return lines
