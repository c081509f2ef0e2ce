"""A process that runs conch under eventlet, as Cinder, Manila and Tacker run it.

Run as ``python -m tests.eventlet.green_worker COMMAND`` from the repository root, with the
backend URL in ``CONCH_URL``: it calls ``eventlet.monkey_patch()`` before importing
anything else. A green :class:`~tests.eventlet.ticker.Ticker` runs throughout; every wait
reports the longest gap between its ticks.

``serve``
    Answer commands read from stdin, one a line (times are ``time.monotonic()``, one
    clock for every process of the host). It says ``ready HOLDING WAITING`` (the member
    ids of its two coordinators) first. KIND is ``exclusive`` (the default), ``shared``,
    ``permits=N`` (a semaphore of limit N) or ``election`` (campaign and resign)::

        hold NAME [KIND]     -> held TOKEN        the holding coordinator takes NAME and
                                keeps it (again: one more hold, by a new object)
        let-go               -> let-go AT         ... and ends its latest hold
        try NAME [KIND]      -> tried RESULT GAP  acquire(blocking=False)
        acquire NAME BLOCKING [KIND] -> waiting, later: acquired RESULT AT ELAPSED GAP TOKEN
                                BLOCKING is "forever" or seconds; the waiting coordinator
                                waits in a green thread while commands go on being read
        release              -> released
        leader NAME          -> leader MEMBER GAP election NAME's leader() ("None": nobody)
        stop                 -> stopped GAP HELD  the waiting coordinator's stop(); HELD:
                                whether what it acquired still counts as held
        block SECONDS        -> blocked GAP        a call that blocks the hub (the original
                                time.sleep), to show that the ticker sees one
        join GROUP           -> joined MEMBER     the waiting coordinator joins GROUP
        watch GROUP          -> watching, then per event: event JOINED LEFT GAP
                                (member ids joined by commas, "-" for none; the ticker's
                                longest gap since the watch began)
        contend NAME HISTORY COUNTER THREADS SECONDS -> done SECTIONS
                                tests.contract.workers.contend_in_threads on green threads,
                                spread over two coordinators

``features``
    Run the checks of :mod:`tests.eventlet.features`, printing ``ok STEP`` after each.
"""

# ruff: noqa: E402 - monkey-patching must come before every other import, as in the services
from __future__ import annotations

import eventlet  # type: ignore[import-untyped]

eventlet.monkey_patch()

import os
import pathlib
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, TextIO

import conch
from tests.contract.workers import contend_in_threads
from tests.eventlet.ticker import Ticker


def lines(stream: TextIO) -> Iterator[str]:
    """The lines arriving on ``stream``, read without blocking the hub (a plain
    ``readline()`` would stop every green thread until a line comes)."""
    buffered = b""
    while True:
        while b"\n" not in buffered:
            # The green select, which lets other green threads run meanwhile. Given the
            # stream, not its number: eventlet 0.41 never watches a descriptor given as 0.
            select.select([stream], [], [])
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                return
            buffered += chunk
        line, _, buffered = buffered.partition(b"\n")
        yield line.decode()


def say(*words: object) -> None:
    """One answer line."""
    print(*words, flush=True)


HOLD_WITHIN = 10.0
"""Seconds ``hold`` waits at most: a hold that does not come fails the worker (its error
output says which) rather than hang its command loop."""


class Holding(NamedTuple):
    """What the commands take and give back, whatever the kind: how to acquire and release
    it, its token and whether it still counts as held (for an election: leading)."""

    acquire: Callable[[bool | float], bool]
    release: Callable[[], None]
    token: Callable[[], int | None]
    held: Callable[[], bool]


def holdable(coordinator: conch.Coordinator, name: str, kind: str) -> Holding:
    """A new object of KIND (see the module docstring) named ``name`` on ``coordinator``."""
    if kind == "election":
        election = coordinator.election(name)
        return Holding(election.campaign, election.resign, lambda: election.token,
                       lambda: election.is_leader)
    lock: conch.Lock | conch.Semaphore
    if kind.startswith("permits="):
        lock = coordinator.semaphore(name, int(kind.removeprefix("permits=")))
    elif kind in ("exclusive", "shared"):
        lock = coordinator.lock(name, shared=kind == "shared")
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return Holding(lock.acquire, lock.release, lambda: lock.token, lambda: lock.held)


class Server:
    """The state behind the ``serve`` commands: a holding and a waiting coordinator."""

    def __init__(self) -> None:
        self.ticker = Ticker()
        self.holding = conch.connect()
        self.waiting = conch.connect()
        self.held: list[Holding] = []
        self.acquired: Holding | None = None

    def hold(self, name: str, kind: str = "exclusive") -> None:
        held = holdable(self.holding, name, kind)
        assert held.acquire(HOLD_WITHIN), f"{kind} {name}: not held within {HOLD_WITHIN} s"
        self.held.append(held)
        say("held", held.token())

    def let_go(self) -> None:
        self.held.pop().release()
        say("let-go", time.monotonic())

    def try_(self, name: str, kind: str = "exclusive") -> None:
        self.ticker.reset()
        result = holdable(self.waiting, name, kind).acquire(False)
        say("tried", result, self.ticker.longest_gap)

    def acquire(self, name: str, blocking: str, kind: str = "exclusive") -> None:
        lock = holdable(self.waiting, name, kind)
        say("waiting")

        def wait() -> None:
            self.ticker.reset()
            started = time.monotonic()
            result = lock.acquire(True if blocking == "forever" else float(blocking))
            returned = time.monotonic()
            gap = self.ticker.longest_gap
            if result:
                self.acquired = lock
            say("acquired", result, returned, returned - started, gap, lock.token())

        threading.Thread(target=wait).start()

    def release(self) -> None:
        assert self.acquired is not None
        self.acquired.release()
        say("released")

    def leader(self, name: str) -> None:
        self.ticker.reset()
        leader = self.holding.election(name).leader()
        say("leader", leader, self.ticker.longest_gap)

    def stop(self) -> None:
        self.ticker.reset()
        self.waiting.stop()
        held = self.acquired is not None and self.acquired.held()
        say("stopped", self.ticker.longest_gap, held)

    def block(self, seconds: str) -> None:
        self.ticker.reset()
        eventlet.patcher.original("time").sleep(float(seconds))
        say("blocked", self.ticker.longest_gap)

    def contend(self, name: str, history: str, counter: str, threads: str,
                seconds: str) -> None:
        sections = contend_in_threads(
            [self.holding, self.waiting], name, pathlib.Path(history),
            pathlib.Path(counter), int(threads), float(seconds))
        say("done", sections)

    def join(self, group: str) -> None:
        self.waiting.group(group).join({"pid": os.getpid()})
        say("joined", self.waiting.member_id)

    def watch(self, group: str) -> None:
        def told(event: conch.GroupEvent) -> None:
            say("event", ",".join(sorted(event.joined)) or "-",
                ",".join(sorted(event.left)) or "-", self.ticker.longest_gap)

        self.ticker.reset()
        self.holding.group(group).watch(told)
        say("watching")

    def serve(self) -> None:
        commands: dict[str, Callable[..., None]] = {
            "hold": self.hold, "let-go": self.let_go, "try": self.try_,
            "acquire": self.acquire, "release": self.release, "contend": self.contend,
            "block": self.block, "join": self.join, "watch": self.watch,
            "leader": self.leader, "stop": self.stop,
        }
        say("ready", self.holding.member_id, self.waiting.member_id)
        for line in lines(sys.stdin):
            command, *arguments = line.split()
            commands[command](*arguments)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        Server().serve()
    elif sys.argv[1:] == ["features"]:
        from tests.eventlet.features import run_all

        run_all(say)
    else:
        sys.exit(f"unknown command {sys.argv[1:]}; see the module docstring")
