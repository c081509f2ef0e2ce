"""What the shared-lock and semaphore tests of the TTL backends (redis, memcached) share:
an exclusive holder of a conch without shared locks and new shared holds exclude and wake
each other; a server restart loses every hold and tokens keep increasing; a waiting writer
that gives up lets the shared holds it held back in; both work over TLS and green."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

import conch
from conch.backends.base import Deadline, LockHandle
from tests.contract.waiting import HANDOFF_WHEN_POLLING
from tests.eventlet.ticker import LONGEST_GAP
from tests.servers.base import ServerProcess

OldExclusive = Callable[[conch.Coordinator, str], LockHandle]
"""The exclusive handle of lock ``name`` as a conch without shared locks makes it."""


def returned_after_release(acquire: Callable[[], object], release: Callable[[], object]
                           ) -> float:
    """Seconds from ``release()`` to the return of ``acquire()`` waiting on a thread (which
    must return something true)."""
    returned: list[float] = []
    waiter = threading.Thread(target=lambda: returned.append(
        time.monotonic() if acquire() else float("inf")))
    waiter.start()
    time.sleep(0.3)
    released = time.monotonic()
    release()
    waiter.join(10)
    assert returned, "the waiter never returned"
    return returned[0] - released


def old_exclusive_and_new_shared_exclude_each_other(url: str, lock_name: str,
                                                    old_exclusive: OldExclusive) -> None:
    """Each side keeps the other out, and its release lets the other's waiter in."""
    with conch.connect(url) as old, conch.connect(url) as new:
        exclusive = old_exclusive(old, lock_name)
        assert exclusive.acquire(Deadline(0)) is not None
        shared = new.lock(lock_name, shared=True)
        assert shared.acquire(blocking=False) is False
        handoff = returned_after_release(lambda: shared.acquire(blocking=5), exclusive.release)
        print(f"\nold exclusive release -> new shared holder: {handoff * 1000:.1f} ms")
        assert handoff < 1.0
        assert exclusive.acquire(Deadline(0)) is None, "an old exclusive hold joined readers"
        assert exclusive.acquire(Deadline(0.3)) is None
        handoff = returned_after_release(lambda: exclusive.acquire(Deadline(5)),
                                         shared.release)
        print(f"new shared release -> old exclusive holder: {handoff * 1000:.1f} ms")
        assert handoff < 2.5  # an old exclusive waiter on memcached polls
        exclusive.release()


def restart_loses_shared_holds_and_permits(url: str, server: ServerProcess,
                                           lock_name: str) -> None:
    """Hold a lock shared and a permit, restart ``server`` (no persistence): both holders
    are told, and the next holds get higher tokens."""
    with conch.connect(url) as holder, conch.connect(url) as other:
        shared, permit = holder.lock(lock_name, shared=True), holder.semaphore(lock_name, 2)
        assert shared.acquire() and permit.acquire()
        first = (shared.token or 0, permit.token or 0)
        server.restart()
        assert shared.lost.wait(10) and permit.lost.wait(10), "the holders were never told"
        exclusive, again = other.lock(lock_name), other.semaphore(lock_name, 3)
        assert exclusive.acquire(blocking=5) and again.acquire(blocking=5)
        assert (exclusive.token or 0) > first[0] and (again.token or 0) > first[1]
        exclusive.release()
        again.release()
        for lost in (shared, permit):
            with pytest.raises(conch.LockLost):
                lost.release()


def shared_holds_wait_for_a_writer_until_it_gives_up(url: str, lock_name: str) -> None:
    """A writer waits 1 s behind a shared hold: a new shared hold waits until it gives up,
    and not much longer."""
    with conch.connect(url) as coordinator:
        first = coordinator.lock(lock_name, shared=True)
        assert first.acquire()
        writer = threading.Thread(target=lambda: coordinator.lock(lock_name).acquire(1.0))
        writer.start()
        time.sleep(0.3)
        late = coordinator.lock(lock_name, shared=True)
        started = time.monotonic()
        assert late.acquire(blocking=5), "held back past the writer's timeout"
        took = time.monotonic() - started
        writer.join()
        print(f"\nshared hold let in {took:.2f} s into a writer's 0.7 s wait left")
        assert 0.4 < took < 1.5
        late.release()
        first.release()


def shared_and_semaphore_hold(url: str, lock_name: str) -> None:
    """One shared hold and one permit, each with a token (a TLS URL, say)."""
    with conch.connect(url) as coordinator:
        with coordinator.lock(lock_name, shared=True) as shared:
            assert shared.token is not None
        with coordinator.semaphore(lock_name, 2) as permit:
            assert permit.token is not None


def green_waits_never_stop_the_hub(url: str, lock_name: str) -> None:
    """Under eventlet (tests/backends/green_shared.py, its own process) a shared waiter and
    a permit waiter are woken by the release and never stop the hub."""
    done = subprocess.run([sys.executable, "-m", "tests.backends.green_shared", url, lock_name],
                          capture_output=True, text=True, timeout=60, check=False)
    results = [line.split() for line in done.stdout.splitlines() if line.startswith("ok ")]
    assert [words[1] for words in results] == ["shared", "permit"], done.stderr[-2000:]
    for _, wait, handoff, gap in results:
        print(f"\ngreen {wait} waiter: hand-off {float(handoff) * 1000:.1f} ms, hub "
              f"stopped {float(gap) * 1000:.1f} ms at most")
        assert float(handoff) < HANDOFF_WHEN_POLLING
        assert float(gap) < LONGEST_GAP
