"""Shared locks, semaphores and elections in processes under eventlet monkey-patching, on
every backend that declares them: each wait parks only its own green thread (the waiting
process's ticker keeps ticking), and releases, kills and ``stop()`` work as in a threaded
process. memory:// plays the three processes in one (its store lives in one process).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import conch
from tests.contract.waiting import dead_holder_bound, handoff_bound
from tests.eventlet.driving import Acquired, GreenWorker
from tests.eventlet.test_green_processes import LATE_MARGIN, WAIT_BEFORE_RELEASE, assert_ticked
from tests.eventlet.ticker import LONGEST_GAP

PERMITS = 2
"""The semaphore's limit: two processes hold, a third waits."""

TIMED_WAIT = 0.5
"""Seconds of the timed waits here: a call blocking the hub for them would show as a gap
twice the ticker's limit (the lock suite times a one-second wait)."""


def times_out(waiter: GreenWorker, name: str, kind: str) -> None:
    """A timed wait of ``waiter`` returns False on time, its ticker ticking."""
    waiter.ask(f"acquire {name} {TIMED_WAIT} {kind}", "waiting")
    timed = Acquired.parse(waiter.expect("acquired"))
    assert timed.result is False, f"a timed wait acquired {kind} {name}, full elsewhere"
    assert TIMED_WAIT <= timed.elapsed < TIMED_WAIT + LATE_MARGIN, \
        f"a {TIMED_WAIT} s wait returned after {timed.elapsed:.3f} s"
    assert_ticked(timed, f"a timed wait ({kind})")


def leads(asker: GreenWorker, name: str, member: str) -> None:
    """``asker`` hears from election ``name``'s ``leader()`` that ``member`` leads (``None``:
    nobody), its ticker ticking."""
    leader, gap = asker.ask(f"leader {name}", "leader")
    assert leader == member, f"leader() says {leader}, not {member}"
    assert float(gap) < LONGEST_GAP, f"leader() stopped the hub for {gap} s"


def woken(waiter: GreenWorker, released_at: float, bound: float, what: str) -> Acquired:
    """``waiter``'s wait forever, woken within ``bound`` seconds of ``released_at``, its
    ticker ticking."""
    got = Acquired.parse(waiter.expect("acquired"))
    assert got.result is True
    assert got.at - released_at < bound, \
        f"{what}: woken {got.at - released_at:.3f} s after the release (bound {bound} s)"
    assert_ticked(got, what)
    return got


def readers_share_while_a_writer_waits(first: GreenWorker, second: GreenWorker,
                                       writer: GreenWorker, name: str, handoff: float) -> None:
    """Two processes hold ``name`` shared at once; a writer's ``blocking=False`` and timed
    wait fail, its wait forever outlasts the first reader and ends soon after the second."""
    tokens = [int(reader.ask(f"hold {name} shared", "held")[0])
              for reader in (first, second)]  # the second while the first holds
    result, gap = writer.ask(f"try {name}", "tried")
    assert result == "False", "blocking=False took a lock two readers hold"
    assert float(gap) < LONGEST_GAP, f"blocking=False stopped the hub for {gap} s"
    times_out(writer, name, "exclusive")

    writer.ask(f"acquire {name} forever", "waiting")
    time.sleep(WAIT_BEFORE_RELEASE)
    first.ask("let-go", "let-go")
    time.sleep(WAIT_BEFORE_RELEASE)  # the writer must go on waiting for the second reader
    last_asked_at = time.monotonic()
    released_at = float(second.ask("let-go", "let-go")[0])
    got = woken(writer, released_at, handoff, "a writer waiting for two readers")
    assert got.at > last_asked_at, "the writer got the lock while a reader still held it"
    assert got.token is not None and got.token > max(tokens)
    writer.ask("release", "released")


def a_third_waits_for_a_permit(first: GreenWorker, second: GreenWorker, third: GreenWorker,
                               name: str, handoff: float) -> None:
    """Two processes hold the two permits; the third's timed wait fails, its wait forever
    ends soon after one of them lets go."""
    kind = f"permits={PERMITS}"
    tokens = [int(holder.ask(f"hold {name} {kind}", "held")[0]) for holder in (first, second)]
    times_out(third, name, kind)
    third.ask(f"acquire {name} forever {kind}", "waiting")
    time.sleep(WAIT_BEFORE_RELEASE)
    released_at = float(second.ask("let-go", "let-go")[0])
    got = woken(third, released_at, handoff, "a wait for a permit")
    assert got.token is not None and got.token > max(tokens)
    third.ask("release", "released")
    first.ask("let-go", "let-go")


def a_candidate_outlives_its_leader(leader: GreenWorker, candidate: GreenWorker, name: str,
                                    handoff: float, dead_leader: float | None) -> None:
    """``leader`` leads; ``candidate`` campaigns, hears who leads meanwhile, and takes over
    when the leader's process is killed (``dead_leader`` None: when it resigns); its
    ``stop()`` ends the new term, and then nobody leads."""
    first_term = int(leader.ask(f"hold {name} election", "held")[0])
    candidate.ask(f"acquire {name} forever election", "waiting")
    leads(candidate, name, leader.holding_id)  # answered while its campaign waits

    time.sleep(WAIT_BEFORE_RELEASE)
    if dead_leader is None:
        gone_at, bound = float(leader.ask("let-go", "let-go")[0]), handoff
    else:
        gone_at, bound = time.monotonic(), dead_leader
        leader.kill()
    won = woken(candidate, gone_at, bound, "a campaign for a gone leader's term")
    assert won.token is not None and won.token > first_term
    leads(candidate, name, candidate.waiting_id)

    gap, leading = candidate.ask("stop", "stopped")
    assert leading == "False", "still leading after stop()"
    assert float(gap) < LONGEST_GAP, f"stop() stopped the hub for {gap} s"
    leads(candidate, name, "None")


@pytest.mark.timeout(120)
def test_shared_holds_permits_and_elections_work_green(
    url: str, backend: str, green_workers: Callable[[int], list[GreenWorker]], lock_name: str
) -> None:
    # Three processes serve the three cases in turn (each case ends holding nothing).
    # memory:// lives in one process: it plays all three, and its leader resigns.
    first, second, third = green_workers(1) * 3 if backend == "memory" else green_workers(3)
    with conch.connect(url) as probe:
        capabilities = probe.capabilities
        handoff, dead_holder = handoff_bound(capabilities), dead_holder_bound(probe)
    if capabilities.shared_locks:  # mysql:// declares none
        readers_share_while_a_writer_waits(first, second, third, f"{lock_name}-rw", handoff)
    if capabilities.semaphores:
        a_third_waits_for_a_permit(first, second, third, f"{lock_name}-permits", handoff)
    if capabilities.introspection:  # which elections need (leader())
        a_candidate_outlives_its_leader(first, second, f"{lock_name}-election", handoff,
                                        None if backend == "memory" else dead_holder)
