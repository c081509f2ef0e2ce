"""conch's blocking calls off the event loop, on threads conch owns: short calls on one small
pool shared by the process, each waiting acquire on a daemon thread of its own. An outcome
returns through ``call_soon_threadsafe``, or runs ``orphaned`` on the calling thread when
the loop has closed meanwhile (docs/aio.md, "Thread path")."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from conch.aio.calls import Outcome
from conch.lock import Blocking, Lock

T = TypeVar("T")
log = logging.getLogger("conch")

POOL_THREADS = 8
"""Threads of the pool for short calls, shared by every AsyncCoordinator of the process."""

_pool: ThreadPoolExecutor | None = None
_pool_mutex = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """The process's pool for short calls (created on first use)."""
    global _pool
    with _pool_mutex:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="conch-aio")
        return _pool


def call_in_thread(
    loop: asyncio.AbstractEventLoop,
    call: Callable[[], T],
    done: Callable[[Outcome[T]], None],
    orphaned: Callable[[Outcome[T]], None],
    *,
    waits: bool,
) -> None:
    """Run ``call`` on a conch thread (its own one when it ``waits``), then ``done(outcome)``
    on ``loop``; ``orphaned(outcome)`` on that thread if ``loop`` is closed by then."""

    def run() -> None:
        try:
            outcome: Outcome[T] = Outcome(value=call())
        except BaseException as exc:  # delivered to the loop, which re-raises it
            outcome = Outcome(error=exc)
        try:
            loop.call_soon_threadsafe(done, outcome)
        except RuntimeError:  # the loop is closed
            orphaned(outcome)

    if waits:
        threading.Thread(target=run, name="conch-aio-wait", daemon=True).start()
    else:
        pool().submit(run)


class ThreadCalls:
    """The queue's calls for a sync :class:`conch.Lock`: on conch's threads."""

    waits_cheaply = False  # a wait takes a thread of its own: try once on the pool first

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def acquire(self, lock: Lock, blocking: Blocking, done: Callable[[Outcome[bool]], None],
                orphaned: Callable[[], None], *, waits: bool) -> None:
        """Run ``lock.acquire(blocking)`` on a thread (its own one when it ``waits``); it
        cannot be stopped early."""

        def give_back(outcome: Outcome[bool]) -> None:  # the loop closed meanwhile
            if outcome.value:
                try:
                    lock.release()
                except Exception as exc:
                    log.debug("conch.aio: releasing a hold of a closed loop: %r", exc)
            orphaned()

        call_in_thread(self._loop, lambda: lock.acquire(blocking), done, give_back, waits=waits)

    def release(self, lock: Lock, done: Callable[[Outcome[None]], None]) -> None:
        """Run ``lock.release()`` on the pool."""
        call_in_thread(self._loop, lock.release, done, lambda _: None, waits=False)

    def stop_acquiring(self) -> list[asyncio.Future[Any]]:
        """A blocking acquire cannot be interrupted: it ends by its deadline (and gives
        back what it gets: the queue is closed)."""
        return []


async def run_in_thread(call: Callable[[], T]) -> T:
    """``call()`` on the pool, awaited (for calls whose result cannot be orphaned)."""
    return await asyncio.get_running_loop().run_in_executor(pool(), call)


def _forget_pool_in_child() -> None:
    # The pool's threads do not exist in a forked child: start a new pool there.
    global _pool, _pool_mutex
    _pool, _pool_mutex = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)
