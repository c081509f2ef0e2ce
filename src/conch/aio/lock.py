"""``AsyncLock``: the contract of :class:`conch.Lock`, awaited. It differs only where asyncio
does (docs/aio.md): ``lost`` is an :class:`asyncio.Event`, a cancelled acquire leaves
nothing held, ``cancel_on_loss`` cancels the holder, and a lock object belongs to the event
loop that first uses it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from conch import metrics
from conch.aio.queue import Hold, NameQueue
from conch.backends.base import Deadline
from conch.errors import LockLost, LockNotHeld
from conch.lock import Blocking, LockName, not_acquired, wait_budget
from conch.metrics_handles import Acquiring, LockMeter


class AsyncLock:
    """A named lock of an :class:`~conch.aio.AsyncCoordinator`; make it with
    ``coordinator.lock(name)``."""

    def __init__(self, name: LockName, queue: Callable[[], NameQueue[Any]],
                 meter: Callable[[], LockMeter] | None) -> None:
        self.name = name
        self.lost = asyncio.Event()
        """Set when a hold is lost before :meth:`release`; cleared by the next acquire."""
        self._queue = queue
        # Its metrics (None: opentelemetry-api is not installed), made by the first acquire
        # measured: a lock object is often made for one acquire, with no SDK configured.
        self._new_meter = meter
        self._meter: LockMeter | None = None
        self._hold: Hold[Any] | None = None
        self._cancel_on_loss: asyncio.Task[object] | None = None
        self._cancelled_on_loss = False

    def __repr__(self) -> str:
        state = "idle" if self._hold is None else "held" if self.held else "lost"
        return f"<conch.aio.AsyncLock {self.name!r} {state}>"

    @property
    def held(self) -> bool:
        """True while this object holds the lock (False once the hold is lost)."""
        return self._hold is not None and self._hold.lock.held

    @property
    def token(self) -> int | None:
        """The fencing token of the current hold, or ``None`` when not held."""
        return None if self._hold is None else self._hold.lock.token

    async def acquire(self, blocking: Blocking = True) -> bool:
        """Take the lock: wait forever (``True``), try once (``False``) or wait at most
        ``blocking`` seconds. Returns whether it was taken.

        Raises :class:`conch.BackendUnavailable` when the backend cannot be reached and
        :class:`conch.NotStarted` when the coordinator is (or gets) stopped. A hold
        lost before this returns is still reported: ``True``, with :attr:`lost` set.
        """
        budget = wait_budget(blocking)
        queue = self._queue()
        timed = self._time_acquire()  # before the deadline starts: a timeout's wait >= budget
        try:
            hold = await queue.acquire(self, Deadline(budget))
        except BaseException as exc:
            if timed is not None:
                timed[0].done(timed[1], False, exc=exc)
            raise
        if timed is not None:
            timed[0].done(timed[1], hold is not None, None if hold is None else hold.lock.token)
        if hold is None:
            return False
        self._hold = hold
        if hold.lock.held:
            self.lost.clear()
        else:
            self.lost.set()
            self._end_hold(hold)
        return True

    async def release(self) -> None:
        """Free the lock. Raises :class:`conch.LockNotHeld` when not held and
        :class:`conch.LockLost` when the hold was lost before this call (the object
        is free again either way). Cancelling the caller does not stop the release."""
        hold, self._hold = self._hold, None
        if hold is None:
            raise LockNotHeld(f"lock {self.name!r} is not held by this object")
        self._cancel_on_loss = None
        self._end_hold(hold)
        try:
            await hold.queue.release(hold)
        except LockLost:  # the backend found the hold gone only now
            self.lost.set()
            raise

    def __call__(self, blocking: Blocking = True, *, cancel_on_loss: bool = False) -> AsyncHold:
        """``async with lock(blocking):``: acquire, else raise :class:`conch.LockAcquireFailed`.

        With ``cancel_on_loss``, losing the hold cancels the task inside the block,
        and leaving the block raises :class:`conch.LockLost` instead of the
        cancellation (unless the task was also cancelled for another reason).
        """
        wait_budget(blocking)  # reject a bad value here, not at ``async with``
        return AsyncHold(self, blocking, cancel_on_loss)

    async def __aenter__(self) -> AsyncLock:
        return await AsyncHold(self, True, False).__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    def _hold_lost(self, hold: Hold[Any]) -> None:
        """The queue reports that the backend lost ``hold`` (on the loop)."""
        if hold is self._hold:
            self.lost.set()
            self._end_hold(hold)
            self._cancel_holder()

    def _time_acquire(self) -> tuple[LockMeter, Acquiring] | None:
        """An acquire starts: its meter and timing, if it is to be measured."""
        if self._new_meter is None:
            return None
        started = metrics.time_now()
        if started is None:
            return None
        if self._meter is None:
            self._meter = self._new_meter()
        return self._meter, self._meter.begin(started)

    def _end_hold(self, hold: Hold[Any]) -> None:
        """``hold`` ends: released, or lost (unless the coordinator's stop freed it)."""
        if self._meter is not None:
            self._meter.hold_ended(lost=not hold.lock.held and not hold.ended_by_stop)

    def _cancel_holder(self) -> None:
        task, self._cancel_on_loss = self._cancel_on_loss, None
        if task is not None and not task.done():
            self._cancelled_on_loss = task.cancel(f"conch: lock {self.name!r} was lost")

    def _watch(self, task: asyncio.Task[object] | None) -> None:
        """Cancel ``task`` when the current hold is lost (now, if it already is)."""
        self._cancel_on_loss = task
        self._cancelled_on_loss = False
        if self._hold is not None and not self._hold.lock.held:
            self._cancel_holder()

    def _unwatch(self) -> bool:
        """Stop watching; whether the watched task was cancelled for a loss."""
        self._cancel_on_loss = None
        cancelled, self._cancelled_on_loss = self._cancelled_on_loss, False
        return cancelled


class AsyncHold:
    """``async with lock(blocking):``: acquire on entry, release (or report the loss) on exit."""

    __slots__ = ("_blocking", "_cancel_on_loss", "_lock")

    def __init__(self, lock: AsyncLock, blocking: Blocking, cancel_on_loss: bool) -> None:
        self._lock = lock
        self._blocking = blocking
        self._cancel_on_loss = cancel_on_loss

    async def __aenter__(self) -> AsyncLock:
        if not await self._lock.acquire(self._blocking):
            raise not_acquired(self._lock.name, self._blocking)
        if self._cancel_on_loss:
            self._lock._watch(asyncio.current_task())
        return self._lock

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        cancelled_by_us = self._lock._unwatch()
        cancelled_by_others = False
        if cancelled_by_us and sys.version_info >= (3, 11):
            task = asyncio.current_task()
            # Take back our cancellation request so that timeouts and task groups
            # around the block count only theirs (Task.uncancel, Python >= 3.11).
            cancelled_by_others = task is not None and task.uncancel() > 0
        try:
            await self._lock.release()
        except LockLost:
            if cancelled_by_others and exc_type is asyncio.CancelledError:
                return  # the CancelledError goes on: another cancellation is pending too
            raise
