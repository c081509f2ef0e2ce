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
from tests.eventlet.test_green_processes import (
    LATE_MARGIN,
    TIMED_WAIT,
    WAIT_BEFORE_RELEASE,
    assert_ticked,
)
from tests.eventlet.ticker import LONGEST_GAP

PERMITS = 2
"""The semaphore's limit: two processes hold, a third waits."""


def processes(backend: str, green_workers: Callable[[int], list[GreenWorker]], count: int
              ) -> list[GreenWorker]:
    """``count`` green processes (memory://: one, ``count`` times)."""
    return green_workers(1) * count if backend == "memory" else green_workers(count)


def declared(url: str, capability: str) -> None:
    """Skip unless the backend declares ``capability``."""
    if not getattr(conch.Coordinator(url).capabilities, capability):
        pytest.skip(f"the {url.split(':', 1)[0]} backend does not declare {capability}")


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


@pytest.mark.timeout(90)
def test_two_green_readers_share_while_a_writer_waits_then_the_writer_gets_it(
    url: str, backend: str, green_workers: Callable[[int], list[GreenWorker]], lock_name: str
) -> None:
    declared(url, "shared_locks")
    first, second, writer = processes(backend, green_workers, 3)
    with conch.connect(url) as probe:
        handoff = handoff_bound(probe.capabilities)
    tokens = [int(reader.ask(f"hold {lock_name} shared", "held")[0])
              for reader in (first, second)]  # the second while the first holds

    result, gap = writer.ask(f"try {lock_name}", "tried")
    assert result == "False", "blocking=False took a lock two readers hold"
    assert float(gap) < LONGEST_GAP, f"blocking=False stopped the hub for {gap} s"
    times_out(writer, lock_name, "exclusive")

    writer.ask(f"acquire {lock_name} forever", "waiting")
    time.sleep(WAIT_BEFORE_RELEASE)
    first.ask("let-go", "let-go")
    time.sleep(WAIT_BEFORE_RELEASE)  # the writer must go on waiting for the second reader
    last_asked_at = time.monotonic()
    released_at = float(second.ask("let-go", "let-go")[0])
    got = woken(writer, released_at, handoff, "a writer waiting for two readers")
    assert got.at > last_asked_at, "the writer got the lock while a reader still held it"
    assert got.token is not None and got.token > max(tokens)
    writer.ask("release", "released")


@pytest.mark.timeout(90)
def test_a_third_green_process_waits_for_one_of_two_permits(
    url: str, backend: str, green_workers: Callable[[int], list[GreenWorker]], lock_name: str
) -> None:
    declared(url, "semaphores")
    first, second, third = processes(backend, green_workers, 3)
    kind = f"permits={PERMITS}"
    with conch.connect(url) as probe:
        handoff = handoff_bound(probe.capabilities)
    for holder in (first, second):
        holder.ask(f"hold {lock_name} {kind}", "held")

    times_out(third, lock_name, kind)
    third.ask(f"acquire {lock_name} forever {kind}", "waiting")
    time.sleep(WAIT_BEFORE_RELEASE)
    released_at = float(second.ask("let-go", "let-go")[0])
    woken(third, released_at, handoff, "a wait for a permit")
    third.ask("release", "released")
    first.ask("let-go", "let-go")


@pytest.mark.timeout(90)
def test_a_green_candidate_takes_over_from_a_killed_leader_and_stop_ends_its_term(
    url: str, backend: str, green_workers: Callable[[int], list[GreenWorker]], lock_name: str
) -> None:
    declared(url, "introspection")
    leader, candidate = processes(backend, green_workers, 2)
    with conch.connect(url) as probe:
        handoff, dead_leader = handoff_bound(probe.capabilities), dead_holder_bound(probe)
    first_term = int(leader.ask(f"hold {lock_name} election", "held")[0])
    candidate.ask(f"acquire {lock_name} forever election", "waiting")
    leads(candidate, lock_name, leader.holding_id)  # answered while its campaign waits

    time.sleep(WAIT_BEFORE_RELEASE)
    if backend == "memory":  # the leader's process is the candidate's: it resigns instead
        gone_at, bound = float(leader.ask("let-go", "let-go")[0]), handoff
    else:
        gone_at, bound = time.monotonic(), dead_leader
        leader.kill()
    won = woken(candidate, gone_at, bound, "a campaign for a killed leader's term")
    assert won.token is not None and won.token > first_term
    leads(candidate, lock_name, candidate.waiting_id)

    _, gap, leading = candidate.ask("stop", "stopped")
    assert leading == "False", "still leading after stop()"
    assert float(gap) < LONGEST_GAP, f"stop() stopped the hub for {gap} s"
    leads(candidate, lock_name, "None")
