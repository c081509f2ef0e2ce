"""The holder's wall clock jumps: no wait, renewal or lease of conch may notice.

The system clock of a shared machine must not be set by a test, so the jump
happens inside the test process: ``time.time`` and ``time.time_ns`` (what Python
code, conch's and its client libraries', reads the wall clock with) are patched
to jump hours forwards, then backwards, while a lock is held and another object
waits for it with a timeout. The servers' clocks are untouched, as when one
client host's clock is stepped. Every duration conch measures must come from
``time.monotonic``: a static check lists the few wall-clock reads in ``src/conch``
and why each is not a duration.
"""

from __future__ import annotations

import ast
import pathlib
import time
from collections.abc import Callable

import pytest

from tests.chaos.scenario import Scenario
from tests.chaos.targets import PROCESS_BACKENDS

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "src" / "conch"
JUMP = 3 * 3600.0
TIMED_WAIT = 0.5

# Where conch reads the wall clock, and why that is not a duration. A new read must be
# added here, with its reason, after checking it is not one.
WALL_CLOCK_READS = {
    ("backends/file/session.py", "next_token"): "the start time shown for a hold (conch show)",
    ("backends/file/session.py", "record_hold"): "the same, for a hold whose token is drawn apart",
    ("backends/file/session.py", "raise_high_water"):
        "a fresh token starts above the clock in µs, so tokens stay above those of a wiped file",
    ("backends/file/session.py", "sweep"): "file modification times are wall-clock: a jump only "
                                   "changes which idle files are swept",
    ("backends/memcached/lock.py", "_fenced"): "a lost counter restarts above the clock in µs",
    ("backends/memcached/lock.py", "_in_grace"): "the epoch of a server's state, a clock value",
    ("backends/memory/lock.py", "try_take"): "the start time shown for a hold (conch show)",
    ("introspection.py", "stamp"): "the start time stored with a hold, for other hosts",
    ("cli_introspection.py", "_ls"): "a hold's age from a start time another host stamped",
    ("cli_introspection.py", "_timestamp"): "a start time shown to a person",
    ("cli_introspection.py", "_members"): "a member's age from a join time its host stamped",
    ("group.py", "join"): "the join and update times stored with a member, for other hosts",
    ("backends/file/inspection.py", "_remove_abandoned"): "file modification times are "
        "wall-clock: a jump only changes which leftovers of a crashed join are removed",
    ("backends/file/groups.py", "names"): "the same, for a leftover group directory",
}
_WALL_CLOCK = {("time", "time"), ("time", "time_ns"), ("time", "localtime"), ("time", "ctime"),
               ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today")}


@pytest.fixture
def jump_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Moves this process's wall clock by the given seconds (its monotonic clock stays)."""
    offset = [0.0]
    wall, wall_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: wall() + offset[0])
    monkeypatch.setattr(time, "time_ns", lambda: wall_ns() + int(offset[0] * 1e9))

    def jump(seconds: float) -> None:
        offset[0] += seconds

    return jump


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["memory", *PROCESS_BACKENDS], indirect=True)
def test_wall_clock_jumps_change_no_timed_wait_renewal_or_lease(
    scenario: Scenario, jump_clock: Callable[[float], None]
) -> None:
    holder, waiter = scenario.holder("holder"), scenario.holder("waiter")
    first_token = holder.acquire(5)
    assert first_token is not None
    hold_for = (scenario.target.lease or 1.0) * 0.6  # twice: longer than the lease
    for jump in (JUMP, -2 * JUMP):
        jump_clock(jump)
        started = time.monotonic()
        assert waiter.acquire(TIMED_WAIT) is None
        waited = time.monotonic() - started
        assert TIMED_WAIT * 0.8 <= waited < TIMED_WAIT + 2.0, f"a 0.5 s wait took {waited:.2f} s"
        time.sleep(hold_for)
    assert holder.lock.held and not holder.lock.lost.is_set(), "the jump cost the hold"
    assert holder.read() == 0
    holder.write()
    assert not holder.release()
    token = waiter.acquire(5)
    assert token is not None and token > first_token
    assert waiter.read() == 1
    waiter.write()
    assert not waiter.release()
    scenario.check()


def test_conch_reads_the_wall_clock_only_where_it_is_not_a_duration() -> None:
    found: set[tuple[str, str]] = set()
    for path in sorted(SOURCE.rglob("*.py")):
        module = str(path.relative_to(SOURCE))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
                imported = {alias.name for alias in node.names}
                assert not imported & {"time", "time_ns"}, f"{module} imports the wall clock"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found |= {(module, node.name) for call in ast.walk(node)
                          if _reads_wall_clock(call)}
    unexplained = found - set(WALL_CLOCK_READS)
    assert not unexplained, f"wall-clock reads to check and explain: {sorted(unexplained)}"


def _reads_wall_clock(node: ast.AST) -> bool:
    if not isinstance(node, ast.Attribute):
        return False
    owner = node.value
    # time.time, datetime.now, and datetime.datetime.now
    name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
    return (name, node.attr) in _WALL_CLOCK
