"""Coroutines waiting for one lock name, served by one backend call at a time.

The waiters of one coordinator on one event loop line up in arrival order; only the queue
calls the backend (``Calls``), never more than one acquire at a time, and a granted hold
goes to the first waiter still waiting. docs/aio.md ("How waiting works") has the design.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol

from conch.aio.calls import Calls, L, Outcome
from conch.backends.base import Deadline
from conch.errors import LockLost, NotStarted

log = logging.getLogger("conch")


class Owner(Protocol):
    """The lock object a hold is granted to (:class:`conch.aio.AsyncLock`)."""

    def _hold_lost(self, hold: Hold[Any]) -> None:
        """The backend lost ``hold`` (called on the loop)."""


class Hold(Generic[L]):
    """One acquisition of the name: the lock object that holds it and its owner."""

    __slots__ = ("lock", "owner", "queue")

    def __init__(self, queue: NameQueue[L], lock: L, owner: Owner) -> None:
        self.queue = queue
        self.lock = lock
        self.owner = owner

    @property
    def ended_by_stop(self) -> bool:
        """Whether the coordinator was stopped: a hold that ends now is freed by that
        stop, not lost (for its metrics)."""
        membership = self.lock._membership
        return membership is not None and membership.stopped


class _Waiter:
    __slots__ = ("deadline", "future", "owner", "timer", "tried")

    def __init__(self, owner: Owner, deadline: Deadline, future: asyncio.Future[Hold[Any] | None]):
        self.owner = owner
        self.deadline = deadline
        self.future = future
        self.timer: asyncio.TimerHandle | None = None
        self.tried = False  # its one-try was made: next comes a wait


class _Call(Generic[L]):
    """The backend acquire in flight, and the waiter it was made for."""

    __slots__ = ("stop", "sync", "waiter", "waits")

    def __init__(self, sync: L, waiter: _Waiter, waits: bool) -> None:
        self.sync = sync
        self.waiter = waiter
        self.waits = waits
        self.stop: Callable[[], object] | None = None


class NameQueue(Generic[L]):
    """The waiters for one name of one coordinator on one event loop (use it on that loop).

    ``new_lock()`` makes a lock object for the name, ``calls`` calls it;
    ``forget(queue)`` (any thread) is called once the queue has nothing left to do.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        new_lock: Callable[[], L],
        calls: Calls[L],
        forget: Callable[[NameQueue[L]], None],
    ) -> None:
        self._loop = loop
        self._new_lock = new_lock
        self._calls = calls
        self._forget = forget
        self._waiters: dict[_Waiter, None] = {}  # in arrival order
        self._spare: list[L] = []  # released lock objects, for the next holds
        self._live: Hold[L] | None = None  # the hold in force (not lost, not released)
        self._owners: set[Owner] = set()  # lock objects with a hold not yet released
        self._call: _Call[L] | None = None
        self._releases = 0  # backend releases in flight
        self._closed: str | None = None  # why, once the coordinator stopped

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the queue belongs to."""
        return self._loop

    async def acquire(self, owner: Owner, deadline: Deadline) -> Hold[L] | None:
        """A hold for ``owner`` before ``deadline``, else ``None``.

        Raises what the backend call made for this waiter raised, and
        :class:`conch.NotStarted` when the coordinator stops meanwhile.
        """
        if self._closed is not None:
            raise NotStarted(self._closed)
        waiter = _Waiter(owner, deadline, self._loop.create_future())
        self._waiters[waiter] = None
        self._serve()
        remaining = deadline.remaining()
        if remaining is not None and not waiter.future.done():
            waiter.timer = self._loop.call_later(remaining, self._expire, waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._withdraw(waiter)
            raise

    def release(self, hold: Hold[L]) -> asyncio.Future[None]:
        """Release ``hold`` on the backend; the future says how it went (an awaiting
        caller may be cancelled: the release still completes)."""
        self._owners.discard(hold.owner)
        result: asyncio.Future[None] = self._loop.create_future()

        def report(outcome: Outcome[None]) -> None:
            if result.done():
                return
            if outcome.error is not None:
                result.set_exception(outcome.error)
            else:
                result.set_result(None)

        self._release(hold.lock, report)
        return result

    def close(self, reason: str) -> list[asyncio.Future[Any]]:
        """The coordinator stops: every waiter, and every later acquire, raises
        :class:`conch.NotStarted` with ``reason``. Returns the backend acquires
        being ended, to await before the backend closes."""
        self._closed = reason
        for waiter in list(self._waiters):
            self._settle(waiter, error=NotStarted(reason))
        return self._calls.stop_acquiring()

    def _serve(self) -> None:
        """Start the next backend call if one is due; forget the queue once idle."""
        while self._call is None and self._live is None and not self._releases:
            head = self._first_eligible()
            if head is None:
                if not self._waiters and not self._owners:
                    self._forget(self)
                return
            if self._closed is not None:
                return
            try:
                self._start_call(head)
            except Exception as exc:  # no call started (the coordinator stopped under us)
                self._call = None
                self._settle(head, error=exc)
            else:
                return

    def _start_call(self, head: _Waiter) -> None:
        """Ask the backend for the name on behalf of ``head``: its one try, then its wait."""
        remaining = head.deadline.remaining()
        waits = (head.tried or self._calls.waits_cheaply) and remaining != 0
        blocking: bool | float = (True if remaining is None else remaining) if waits else False
        sync = self._spare.pop() if self._spare else self._lock_for_this_queue()
        call = self._call = _Call(sync, head, waits)
        call.stop = self._calls.acquire(
            sync, blocking, lambda outcome: self._acquired(call, outcome),
            lambda: self._forget(self), waits=waits,
        )
        head.tried = True

    def _acquired(self, call: _Call[L], outcome: Outcome[bool]) -> None:
        self._call = None
        sync, asked_for = call.sync, call.waiter
        if outcome.error is not None:  # its lock is dropped: the next hold uses a fresh one
            if not asked_for.future.done():
                self._settle(asked_for, error=outcome.error)
            else:
                log.debug("conch.aio: an acquire nobody awaits failed: %r", outcome.error)
        elif outcome.value:
            waiter = self._first_eligible()
            if waiter is None or self._closed is not None:
                self._release(sync, None)  # acquired for nobody: give it back at once
            else:
                hold = Hold(self, sync, waiter.owner)
                self._owners.add(waiter.owner)
                if sync.held:  # else lost already: the owner sees it when it resumes
                    self._live = hold
                self._settle(waiter, hold=hold)
        else:
            self._spare.append(sync)
        # The call ended by its waiter's deadline (or a failed wait): so does that waiter.
        gave_up = call.waits and outcome.error is None and not outcome.value
        if not asked_for.future.done() and (gave_up or asked_for.deadline.expired()):
            self._settle(asked_for, hold=None)
        self._serve()

    def _release(self, sync: L, report: Callable[[Outcome[None]], None] | None) -> None:
        if self._live is not None and self._live.lock is sync:
            self._live = None
        self._releases += 1

        def released(outcome: Outcome[None]) -> None:
            self._releases -= 1
            if outcome.error is None or isinstance(outcome.error, LockLost):
                self._spare.append(sync)  # else dropped: its backend handle may be confused
            if report is not None:
                report(outcome)
            elif outcome.error is not None:
                log.debug("conch.aio: releasing an unwanted hold: %r", outcome.error)
            self._serve()

        self._calls.release(sync, released)

    def _lock_for_this_queue(self) -> L:
        sync = self._new_lock()

        def lost() -> None:  # on the thread that reports the loss
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
                self._loop.call_soon_threadsafe(self._lost, sync)

        sync.add_loss_listener(lost)
        return sync

    def _lost(self, sync: L) -> None:
        hold = self._live
        if hold is None or hold.lock is not sync:
            return  # lost while acquiring (its owner checks), or released already
        self._live = None
        hold.owner._hold_lost(hold)
        self._serve()  # the name is free for the next waiter, as for another lock object

    def _first_eligible(self) -> _Waiter | None:
        for waiter in self._waiters:
            # A cancelled task's future is cancelled before its coroutine withdraws.
            if waiter.owner not in self._owners and not waiter.future.done():
                return waiter
        return None

    def _expire(self, waiter: _Waiter) -> None:
        call = self._call
        if call is not None and call.waiter is waiter:
            return  # its own call ends by its deadline: that call decides
        if not waiter.future.done():
            self._settle(waiter, hold=None)
            self._serve()

    def _withdraw(self, waiter: _Waiter) -> None:
        """The waiting coroutine was cancelled: drop out, giving back a hold it was granted."""
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            hold = future.result()
            if hold is not None:
                self._owners.discard(hold.owner)
                self._release(hold.lock, None)
            return
        self._settle(waiter, cancelled=True)
        call = self._call
        if call is not None and call.stop is not None and call.waiter.future.done() \
                and self._first_eligible() is None:
            call.stop()  # nobody wants what it would get: free the backend wait now
        self._serve()

    def _settle(
        self,
        waiter: _Waiter,
        *,
        hold: Hold[L] | None = None,
        error: BaseException | None = None,
        cancelled: bool = False,
    ) -> None:
        """Take ``waiter`` out of the line and give its coroutine its result."""
        if waiter.timer is not None:
            waiter.timer.cancel()
        self._waiters.pop(waiter, None)
        if waiter.future.done():
            return
        if cancelled:
            waiter.future.cancel()
        elif error is not None:
            waiter.future.set_exception(error)
        else:
            waiter.future.set_result(hold)
