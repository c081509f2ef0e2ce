"""Checks run inside a monkey-patched process (:mod:`tests.eventlet.green_worker`
``features``): the APIs the services use, renewal, loss reporting and ``stop()``.

Each step raises AssertionError on a failure; :func:`run_all` prints ``ok STEP`` after
each one that passed. The renewal hold runs beside the other steps, in a green thread,
so the process takes about one lease, not one lease more than the sum of its steps.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

import conch
from conch.compat import tacker
from conch.compat.tooz import coordination
from conch.url import parse_url
from tests.compat.conftest import as_tooz_url
from tests.contract.test_stop_while_waiting import STOP_BOUND, UNINTERRUPTIBLE
from tests.eventlet.ticker import LONGEST_GAP, Ticker
from tests.test_introspection import LEARNS_WITHIN

CALLERS = 4
"""Green threads calling one synchronized function at once."""

TIMED_WAIT = 0.5
"""Seconds of the timed waits of these steps."""

SESSION_BOUND_HOLD = 1.0
"""Seconds the renewal step holds on a backend whose URL sets no lease."""


def unique(what: str) -> str:
    """A lock name no other step or run uses."""
    return f"green-{what}-{uuid.uuid4().hex}"


def check_gap(ticker: Ticker, during: str) -> None:
    """Fail when the ticker stopped for longer than :data:`LONGEST_GAP` since its reset."""
    gap = ticker.longest_gap
    assert gap < LONGEST_GAP, f"the hub stopped for {gap:.3f} s during {during}"


def in_green_threads(call: Callable[[], object], count: int) -> None:
    """Run ``call`` in ``count`` green threads at once; re-raise the first error."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    callers = [threading.Thread(target=run) for _ in range(count)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    if errors:
        raise errors[0]


class Occupancy:
    """Counts the callers inside a critical section; ``peak`` above 1 is an overlap."""

    def __init__(self) -> None:
        self.inside = self.peak = self.entries = 0

    def visit(self) -> None:
        self.inside += 1
        self.entries += 1
        self.peak = max(self.peak, self.inside)
        time.sleep(0.01)  # a green switch: an intruder would come in now
        self.inside -= 1


def synchronized(url: str, ticker: Ticker) -> None:
    """``conch.synchronized`` on the process default coordinator (``CONCH_URL``)."""
    occupancy = Occupancy()

    @conch.synchronized("{name}")
    def critical(name: str) -> None:
        occupancy.visit()

    name = unique("synchronized")
    ticker.reset()
    in_green_threads(lambda: critical(name), CALLERS)
    assert occupancy.entries == CALLERS and occupancy.peak == 1, vars(occupancy)
    check_gap(ticker, "synchronized calls waiting for each other")


def tooz(url: str, ticker: Ticker) -> None:
    """``conch.compat.tooz``: get_coordinator with the tooz URL, get_lock, acquire, release."""
    members = [coordination.get_coordinator(as_tooz_url(url), member)
               for member in (b"green-1", b"green-2")]
    for member in members:
        member.start(start_heart=True)
    name = unique("tooz")
    held, other = (member.get_lock(name) for member in members)
    assert held.acquire() is True
    assert other.acquire(blocking=False) is False
    ticker.reset()
    started = time.monotonic()
    assert other.acquire(blocking=TIMED_WAIT) is False
    waited = time.monotonic() - started
    assert waited >= TIMED_WAIT, f"a {TIMED_WAIT} s wait returned after {waited:.3f} s"
    check_gap(ticker, "a tooz lock's timed wait")
    assert held.release() is True
    assert other.acquire(blocking=5) is True
    assert other.release() is True
    for member in members:
        member.stop()


def tacker_(url: str, ticker: Ticker) -> None:
    """``conch.compat.tacker``: Coordinator().start() (URL from CONCH_URL) and synchronized."""
    service = tacker.Coordinator(prefix="green-")
    service.start()
    occupancy = Occupancy()
    suffix = uuid.uuid4().hex

    @tacker.synchronized("{f_name}-{vnf_id}", coordinator=service)
    def heal(vnf_id: str) -> None:
        occupancy.visit()

    ticker.reset()
    in_green_threads(lambda: heal(suffix), CALLERS)
    assert occupancy.entries == CALLERS and occupancy.peak == 1, vars(occupancy)
    check_gap(ticker, "Tacker's synchronized calls waiting for each other")
    service.stop()


def stop_while_waiting(url: str, ticker: Ticker) -> str:
    """``stop()`` ends the green threads waiting on its locks with NotStarted; returns how
    long after ``stop()`` the interruptible waits ended."""
    name = unique("stop")
    holder = conch.connect(url)
    held = holder.lock(name)
    assert held.acquire()
    stopping = conch.connect(url)
    ended: dict[object, tuple[float, BaseException | bool]] = {}

    def wait(blocking: bool | float) -> None:
        try:
            outcome: BaseException | bool = stopping.lock(name).acquire(blocking)
        except BaseException as exc:
            outcome = exc
        ended[blocking] = (time.monotonic(), outcome)

    waits = {blocking: threading.Thread(target=wait, args=(blocking,))
             for blocking in (True, 30.0)}
    for waiting in waits.values():
        waiting.start()
    time.sleep(0.3)
    ticker.reset()
    stopped_at = time.monotonic()
    stopping.stop()
    scheme = url.split("://", 1)[0]
    took_each = []
    for blocking, waiting in waits.items():
        if (scheme, blocking) not in UNINTERRUPTIBLE:
            waiting.join(STOP_BOUND)
            assert blocking in ended, f"blocking={blocking}: still waiting after stop()"
            took = ended[blocking][0] - stopped_at
            assert took < STOP_BOUND, f"blocking={blocking}: ended {took:.2f} s after stop()"
            took_each.append(f"{blocking}:{took:.3f}s")
    check_gap(ticker, "stop() and the waits it ended")
    held.release()
    for blocking, waiting in waits.items():
        waiting.join(STOP_BOUND)
        assert isinstance(ended[blocking][1], conch.NotStarted), (blocking, ended[blocking])
    holder.stop()
    return "ended-after-stop " + " ".join(took_each)


def loss(url: str, ticker: Ticker) -> None:
    """A broken hold is reported: ``lock.lost`` is set and ``release()`` raises LockLost."""
    holder = conch.connect(url)
    if not holder.capabilities.breakable:
        holder.stop()
        return
    name = unique("loss")
    lock = holder.lock(name)
    assert lock.acquire()
    with conch.connect(url) as observer:
        observer.break_lock(name)
    ticker.reset()
    assert lock.lost.wait(LEARNS_WITHIN), f"not told of the loss within {LEARNS_WITHIN} s"
    check_gap(ticker, "waiting to be told of a loss")
    try:
        lock.release()
    except conch.LockLost:
        pass
    else:
        raise AssertionError("release() of a broken hold did not raise LockLost")
    holder.stop()


def renewal(url: str) -> None:
    """A hold outlives its lease (``ttl``, ZooKeeper's ``timeout``): renewal runs green."""
    query = parse_url(url).query
    lease = query.get("ttl") or query.get("timeout")
    name = unique("renewal")
    holder, other = conch.connect(url), conch.connect(url)
    lock = holder.lock(name)
    assert lock.acquire()
    time.sleep(float(lease) + 1.0 if lease else SESSION_BOUND_HOLD)
    assert not lock.lost.is_set(), "the hold was lost: it was not renewed"
    assert other.lock(name).acquire(blocking=False) is False, "the lease ran out"
    lock.release()
    holder.stop()
    other.stop()


STEPS = (synchronized, tooz, tacker_, stop_while_waiting, loss)


def run_all(say: Callable[..., None]) -> None:
    """Run every step, with :func:`renewal` beside them; ``say("ok", step)`` after each."""
    url = os.environ["CONCH_URL"]
    # Import the backend and its client library first: a first import is CPU work no green
    # thread can interrupt (about 0.2 s for redis-py), not a wait that blocks the hub.
    conch.connect(url).stop()
    ticker = Ticker()
    renewal_error: list[BaseException] = []

    def renew() -> None:
        try:
            renewal(url)
        except BaseException as exc:
            renewal_error.append(exc)

    renewing = threading.Thread(target=renew)
    renewing.start()
    for step in STEPS:
        note = step(url, ticker)
        say("ok", step.__name__.rstrip("_"), note or "")
    renewing.join()
    if renewal_error:
        raise renewal_error[0]
    say("ok", "renewal")
