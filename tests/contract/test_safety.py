"""Safety under contention: never two holders at once, no lost update, tokens in order.

Several processes (threads for ``memory://``, whose locks live in one process)
take one name again and again. Each records its critical sections
(:mod:`conch.history`) and bumps a counter file the unsafe way inside them;
the history checker and the final count must both find nothing wrong.
"""

from __future__ import annotations

import pathlib

import pytest

import conch
from conch.history import load, violations
from tests.contract import workers

PROCESSES = 4
CONTENTION_SECONDS = 3.0


@pytest.mark.timeout(120)
def test_concurrent_holders_never_overlap_and_lose_no_update(
    url: str, backend: str, coordinator: conch.Coordinator, other_coordinator: conch.Coordinator,
    lock_name: str, tmp_path: pathlib.Path,
) -> None:
    history = tmp_path / "history"
    history.mkdir()
    counter = tmp_path / "counter"
    counter.write_text("0")
    if backend == "memory":
        reported = workers.contend_in_threads(
            [coordinator, other_coordinator], lock_name, history, counter,
            PROCESSES, CONTENTION_SECONDS,
        )
    else:
        reported = _contend_in_processes(url, lock_name, history, counter)

    sections = load(history)
    assert len(sections) == reported, "sections went unrecorded"
    assert len({section.holder for section in sections}) >= 2, "no contention took place"
    problems = violations(sections, fencing=coordinator.capabilities.fencing)
    assert not problems, "\n".join(problems[:20])
    assert int(counter.read_text()) == len(sections), "an update was lost: two holders at once"


def _contend_in_processes(
    url: str, name: str, history: pathlib.Path, counter: pathlib.Path
) -> int:
    processes = [workers.spawn(url, "contend", name, str(history), str(counter), "1")
                 for _ in range(PROCESSES)]
    try:
        for process in processes:
            workers.expect(process, "ready")
        for process in processes:  # all connected: start them together
            assert process.stdin is not None
            process.stdin.write(f"go {CONTENTION_SECONDS}\n")
            process.stdin.flush()
        return sum(int(workers.finish(process).split()[-1]) for process in processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
