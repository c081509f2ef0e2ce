"""``NativeLock``: the async twin of :class:`conch.Lock` for ``native_async`` backends, with
the same states, token and loss reporting (:mod:`conch.hold_state`), awaiting the backend's
:class:`~conch.backends.base.AsyncLockHandle` on the event loop instead of calling it on a
thread. :mod:`conch.aio.queue` drives it and never starts an acquire while a hold is in
progress."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from conch.aio.calls import Outcome
from conch.backends.base import AsyncLockHandle, Deadline
from conch.errors import NotStarted
from conch.hold_state import LOST, LockObject, raise_reported
from conch.lock import Blocking, LockName, lock_key, wait_budget

if TYPE_CHECKING:
    from conch.coordinator import Coordinator

T = TypeVar("T")


def native_lock(coordinator: Coordinator, name: LockName) -> NativeLock:
    """A lock of ``coordinator`` (started, ``native_async`` backend) awaiting its backend's
    asyncio handle, made on the event loop that will use it. Not metered: :mod:`conch.aio`
    meters each coroutine's acquire."""
    key = lock_key(name)
    backend, membership = coordinator._started()
    return NativeLock(name, lambda on_lost: backend.async_handle(key, on_lost),
                      coordinator._describe_error, membership)


class NativeLock(LockObject[AsyncLockHandle]):
    """A named lock of one coordinator, used on the event loop that made it."""

    def __repr__(self) -> str:
        return f"<conch.aio.NativeLock {self.name!r} {self._state.value}>"

    async def acquire(self, blocking: Blocking = True) -> bool:
        """Take the lock as :meth:`conch.Lock.acquire` does; a cancelled acquire leaves
        nothing held (the handle's promise)."""
        deadline = Deadline(wait_budget(blocking))
        if not self._start_acquiring():
            raise NotStarted(f"{self._membership.who} was stopped")
        try:
            token = await self._handle.acquire(deadline)
        except BaseException as exc:
            self._give_up()
            raise_reported(exc, self._describe_error)
        if token is None:
            self._give_up()
            return False
        if self._admit(token):
            return True
        # Granted as the coordinator stopped, which did not see this hold: give it back.
        self._handle.abandon()
        self._give_up()
        raise NotStarted(f"{self._membership.who} was stopped while lock {self.name!r} "
                         "was awaited")

    async def release(self) -> None:
        """Free the lock, raising as :meth:`conch.Lock.release` does."""
        state, backend_holds = self._start_release()
        try:
            if backend_holds:
                await self._handle.release()
        except Exception as exc:
            self._release_failed(exc, state)
        if state is LOST:
            raise self._lost_before_release()

    def _free_now(self) -> None:
        self._handle.abandon()


class TaskCalls:
    """The queue's calls for a :class:`NativeLock`: tasks on the queue's loop.

    A task still running when the loop shuts down is cancelled, and a cancelled
    acquire leaves nothing held, so nothing is ever orphaned.
    """

    waits_cheaply = True

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._running: set[asyncio.Task[Any]] = set()  # strong references until done
        self._acquiring: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    def acquire(self, lock: NativeLock, blocking: Blocking,
                done: Callable[[Outcome[bool]], None], orphaned: Callable[[], None],
                *, waits: bool) -> Callable[[], object]:
        """Start ``lock.acquire(blocking)`` as a task; cancelling it stops it."""
        task = self._start(lock.acquire(blocking), done)
        self._acquiring.add(task)
        return task.cancel

    def release(self, lock: NativeLock, done: Callable[[Outcome[None]], None]) -> None:
        """Start ``lock.release()`` as a task (a caller's cancellation does not stop it)."""
        self._start(lock.release(), done)

    def stop_acquiring(self) -> list[asyncio.Future[Any]]:
        """Cancel the acquires in flight (a cancelled acquire leaves nothing held)."""
        tasks = [task for task in self._acquiring if not task.done()]
        for task in tasks:
            task.cancel()
        return list(tasks)

    def _start(self, call: Coroutine[Any, Any, T],
               done: Callable[[Outcome[T]], None]) -> asyncio.Task[None]:
        # ``done`` runs inside the task, not as its done-callback: one loop turn less.
        async def run() -> None:
            try:
                outcome: Outcome[T] = Outcome(value=await call)
            except BaseException as exc:  # handed to the queue, which re-raises it
                outcome = Outcome(error=exc)
            done(outcome)
            if isinstance(outcome.error, (KeyboardInterrupt, SystemExit)):
                raise outcome.error

        task = self._loop.create_task(run())
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task
