"""Shared locks and semaphores under eventlet, as the services run conch: run as
``python -m tests.backends.green_shared URL NAME`` from the repository root. It
monkey-patches first, then waits green (shared behind an exclusive hold, a permit behind
a full semaphore) while a ticker runs, and prints ``ok WAIT HANDOFF GAP`` per wait."""

# ruff: noqa: E402 - monkey-patching must come before every other import, as in the services
from __future__ import annotations

import eventlet  # type: ignore[import-untyped]

eventlet.monkey_patch()

import sys
import threading
import time
from collections.abc import Callable

import conch
from tests.eventlet.ticker import Ticker


def green_wait(what: str, ticker: Ticker, acquire: Callable[[], bool],
               release: Callable[[], object]) -> None:
    """``acquire()`` in a green thread, ``release()`` 0.5 s later; print how long the
    hand-off took and the hub's longest stop meanwhile."""
    returned: list[float] = []
    waiter = threading.Thread(target=lambda: returned.append(
        time.monotonic() if acquire() else float("inf")))
    ticker.reset()
    waiter.start()
    time.sleep(0.5)
    released = time.monotonic()
    release()
    waiter.join(10)
    print("ok", what, f"{returned[0] - released:.3f}", f"{ticker.longest_gap:.3f}", flush=True)


def main(url: str, name: str) -> None:
    ticker = Ticker()
    with conch.connect(url) as holder, conch.connect(url) as waiting:
        exclusive, shared = holder.lock(name), waiting.lock(name, shared=True)
        assert exclusive.acquire()
        green_wait("shared", ticker, lambda: shared.acquire(blocking=10), exclusive.release)
        shared.release()
        full, permit = holder.semaphore(name, 1), waiting.semaphore(name, 1)
        assert full.acquire()
        green_wait("permit", ticker, lambda: permit.acquire(blocking=10), full.release)
        permit.release()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
