"""The results table of a chaos run: scenarios x backends, pass and time to recover.

    CONCH_CHAOS_RESULTS=/tmp/chaos.jsonl python -m pytest tests/chaos
    python -m benchmarks.soak --minutes 1 > /tmp/soak.txt 2>&1     # optional
    python -m tests.chaos.report /tmp/chaos.jsonl --soak /tmp/soak.txt --out docs/chaos-results.md

Reads what the run recorded (:mod:`tests.chaos.scenario`: each test's outcome,
each measured duration and observed outcome) and writes markdown: one row per
scenario, one column per backend, each cell the verdict and the scenario's
recovery time(s); then every measurement and note.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

BACKENDS = ("memory", "file", "redis", "etcd", "zookeeper", "postgresql", "mysql", "memcached")

# (test, variant): the row's label and the metrics shown in its cells, in order.
ROWS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("test_a_holder_killed_mid_section_is_replaced_and_no_update_is_lost", "lock",
     "holder SIGKILLed mid-section → another process holds",
     ("taken over after SIGKILL",)),
    ("test_a_holder_frozen_past_its_lease_is_told_and_fenced_out_or_keeps_the_lock", "lock",
     "holder frozen (SIGSTOP) past its lease → waiter holds; thawed holder told",
     ("taken over after SIGSTOP", "thawed holder told of the loss")),
    ("test_a_server_fault_while_held_and_awaited_never_gives_two_holders", "restart",
     "server restarted while held and awaited → next holder",
     ("next holder after the restart",)),
    ("test_a_server_fault_while_held_and_awaited_never_gives_two_holders", "pause",
     "server frozen past the lease → holder told; next holder after the thaw",
     ("holder told, server frozen", "next holder after the pause")),
    ("test_a_holder_cut_off_from_its_server_is_told_before_anyone_else_holds", "lock",
     "connection cut, holder side (partition) → holder told; next holder",
     ("holder told, cut off", "next holder after the cut")),
    ("test_a_waiter_cut_off_while_waiting_gets_the_lock_after_the_next_holder_only", "",
     "connection cut, waiter side (reset) → waiter holds after the release",
     ("cut-off waiter got the lock after its release",)),
    ("test_an_acquire_whose_reply_is_lost_leaves_no_orphan_and_no_second_holder", "",
     "acquire applied, reply lost → lock free again",
     ("lock free again after the lost reply",)),
    ("test_killing_the_leader_during_contention_loses_no_update", "lock",
     "3-member cluster: leader SIGKILLed during contention → next section",
     ("first section after the leader was killed",)),
    ("test_a_holder_in_a_partitioned_minority_is_told_before_the_majority_grants_the_lock", "lock",
     "3-member cluster: leader + holder partitioned away → holder told; majority holds",
     ("minority holder told", "majority waiter got the lock")),
    ("test_a_holder_killed_mid_section_is_replaced_and_no_update_is_lost", "election",
     "leader SIGKILLed mid-term → another process leads", ("taken over after SIGKILL",)),
    ("test_a_holder_frozen_past_its_lease_is_told_and_fenced_out_or_keeps_the_lock",
     "election", "leader frozen past its lease → another leads; thawed leader told",
     ("taken over after SIGSTOP", "thawed holder told of the loss")),
    ("test_a_holder_killed_mid_section_is_replaced_and_no_update_is_lost", "permit",
     "semaphore permit (limit 1) holder SIGKILLed → another process holds",
     ("taken over after SIGKILL",)),
    ("test_a_holder_frozen_past_its_lease_is_told_and_fenced_out_or_keeps_the_lock",
     "permit", "semaphore permit holder frozen past its lease → waiter holds; thawed told",
     ("taken over after SIGSTOP", "thawed holder told of the loss")),
    ("test_a_holder_cut_off_from_its_server_is_told_before_anyone_else_holds", "election",
     "leader cut off (partition) → leader told; next leader",
     ("holder told, cut off", "next holder after the cut")),
    ("test_killing_the_leader_during_contention_loses_no_update", "election",
     "3-member cluster: its leader SIGKILLed while members campaign → next term",
     ("first section after the leader was killed",)),
    ("test_a_holder_in_a_partitioned_minority_is_told_before_the_majority_grants_the_lock",
     "election", "3-member cluster: partitioned with the conch leader → leader told; next",
     ("minority holder told", "majority waiter got the lock")),
    ("test_a_member_frozen_past_its_lease_leaves_and_is_told_when_thawed", "",
     "group member frozen past its lease → seen leaving; thawed member told, re-joins",
     ("frozen member seen leaving", "thawed member told", "thawed member re-joined")),
    ("test_a_member_cut_off_from_its_server_leaves_and_rejoins_once_healed", "",
     "group member cut off (partition) → told; re-joins once healed",
     ("member told, cut off", "member re-joined after healing")),
    ("test_wall_clock_jumps_change_no_timed_wait_renewal_or_lease", "",
     "holder's wall clock jumps ±3 h (timed waits, renewals, leases)", ()),
    ("test_hostile_names_lock_exclude_and_stay_inside_the_backends_namespace", "",
     "hostile names (64 KiB, NUL, ../../etc/passwd, SQL, Lua, not UTF-8)", ()),
    ("test_wrong_credentials_are_one_clear_error_shown_and_logged_without_the_password", "",
     "wrong credentials: one clear error, password in no message or DEBUG log", ()),
    ("test_malformed_and_hostile_urls_are_one_clear_error_without_the_password", "",
     "malformed and hostile URLs: one clear error, no password shown", ()),
]


# Notes (observed outcomes) shown in a cell that has no time to show.
CELL_NOTES = {
    "kept the lock (held with its connection)": "(kept: held with its connection)",
    "kept its membership (held with its connection)": "(kept: held with its connection)",
    "kept by the server until the path healed": "(kept by the server until healed)",
    "kept the lock": "(the holder kept it: the server kept its state)",
}


def load(path: str) -> list[dict[str, Any]]:
    """The entries a run recorded."""
    with open(path, encoding="utf-8") as source:
        return [json.loads(line) for line in source if line.strip()]


def render(entries: Sequence[dict[str, Any]], command: str, soak: str = "") -> str:
    """The markdown report of ``entries`` (and of a soak run's output, if given)."""
    Key = tuple[str, str, str]  # test, variant, backend
    outcomes: dict[Key, str] = {}
    figures: dict[Key, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    notes: dict[Key, dict[str, str]] = defaultdict(dict)
    for entry in entries:
        backend, variant = _split(entry["params"])
        key = (entry["test"], variant, backend)
        if "outcome" in entry:
            if entry["outcome"] != "passed" or key not in outcomes:
                outcomes[key] = entry["outcome"]
        elif "seconds" in entry:
            figures[key][entry["metric"]].append(entry["seconds"])
        else:
            notes[key][entry["metric"]] = entry["text"]

    lines = [
        "# Chaos results: scenarios x backends",
        "",
        "Generated from real runs of the chaos suite and the soak (see [chaos.md](chaos.md)):",
        "",
        f"    {command}",
        "",
        *_environment(),
        "",
        "Each cell: the verdict (**pass**: the scenario's assertions held and the history",
        "checker found no violation; **known bug**: an expected failure, explained below;",
        "**—**: the fault does not apply to the backend) and the recovery time(s) measured,",
        "in the order the row names them. Leases in the run: 2 s (redis, etcd, ZooKeeper",
        "session, MySQL session), 3 s (memcached); file:// and postgresql:// hold a lock",
        "as long as the holder's connection or process.",
        "",
        "| scenario | " + " | ".join(BACKENDS) + " |",
        "|---|" + "---|" * len(BACKENDS),
    ]
    for test, variant, label, metrics in ROWS:
        cells = []
        for backend in BACKENDS:
            key = (test, variant, backend)
            outcome = outcomes.get(key)
            if outcome is None:
                cells.append("—")
                continue
            verdict = {"passed": "pass", "xfailed": "known bug"}.get(outcome, f"**{outcome}**")
            times = [_seconds(figures[key].get(metric, [])) for metric in metrics]
            shown = ", ".join(time for time in times if time)
            if not shown and outcome == "passed":
                shown = next((CELL_NOTES[text] for text in notes[key].values()
                              if text in CELL_NOTES), "")
            cells.append(f"{verdict} {shown}".strip())
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Every measurement and note", ""]
    for test, variant, label, _ in ROWS:
        for backend in BACKENDS:
            key = (test, variant, backend)
            measured, said = figures.get(key, {}), notes.get(key, {})
            if key not in outcomes or not (measured or said):
                continue
            items = [f"{metric} {_seconds(values)}" for metric, values in measured.items()]
            items += [f"{metric}: {text}" for metric, text in said.items()]
            lines.append(f"- {label} [{backend}]: " + "; ".join(items))
    if soak:
        lines += ["", "## Soak run", "",
                  "What `python -m benchmarks.soak` printed (stderr included):",
                  "", "```", soak.strip(), "```"]
    return "\n".join(lines) + "\n"


def _split(params: str) -> tuple[str, str]:
    """The backend and the variant (e.g. ``restart``) of a test's parameter id."""
    parts = params.split("-") if params else []
    backend = next((part for part in parts if part in BACKENDS), "")
    variant = "-".join(part for part in parts if part != backend)
    return backend, variant


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return ""
    return f"{values[0]:.2f} s" if len(values) == 1 else \
        f"{min(values):.2f}-{max(values):.2f} s"


def _environment() -> list[str]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "src") else ""
    load1, load5, _ = os.getloadavg()
    commit = git("rev-parse", "--short", "HEAD")
    return [
        f"- date: {datetime.date.today().isoformat()}; conch commit {commit}{dirty}",
        f"- machine: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; load average at the end {load1:.1f} / {load5:.1f}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report of a results file."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the JSON lines a run wrote (CONCH_CHAOS_RESULTS)")
    parser.add_argument("--out", help="write the markdown here (default: print it)")
    parser.add_argument("--soak", help="a file holding the output of a soak run, to include")
    parser.add_argument("--command", default="CONCH_CHAOS_RESULTS=results.jsonl "
                                              "python -m pytest tests/chaos",
                        help="the command that produced the results, for the record")
    args = parser.parse_args(argv)
    soak = pathlib.Path(args.soak).read_text(encoding="utf-8") if args.soak else ""
    text = render(load(args.results), args.command, soak)
    if args.out:
        pathlib.Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
