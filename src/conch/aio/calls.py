"""What :mod:`conch.aio.queue` needs of the lock objects it drives and of the way it calls
them: :class:`conch.aio.threads.ThreadCalls` (a sync :class:`conch.Lock` on conch's
threads) or :class:`conch.aio.native.TaskCalls` (a NativeLock as tasks)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from conch.hold_state import Membership
from conch.lock import Blocking

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a call returned, or the exception it raised."""

    value: T | None = None
    error: BaseException | None = None


class QueuedLock(Protocol):
    """What the queue reads of a lock object (:class:`conch.Lock`, or a NativeLock)."""

    @property
    def held(self) -> bool: ...

    @property
    def token(self) -> int | None: ...

    def add_loss_listener(self, listener: Callable[[], None]) -> None: ...

    @property
    def _membership(self) -> Membership | None: ...


L = TypeVar("L", bound=QueuedLock)
L_contra = TypeVar("L_contra", bound=QueuedLock, contravariant=True)


class Calls(Protocol[L_contra]):
    """How a queue calls its lock objects' acquire and release off its loop's way.

    ``waits_cheaply``: a waiting acquire costs no more than a one-try (no thread of its
    own), so the first waiter's call may wait at once instead of trying once first.
    """

    waits_cheaply: bool

    def acquire(self, lock: L_contra, blocking: Blocking, done: Callable[[Outcome[bool]], None],
                orphaned: Callable[[], None], *, waits: bool) -> Callable[[], object] | None:
        """Start ``lock.acquire(blocking)``; ``done(outcome)`` on the loop, or, when the
        loop is closed by then, ``orphaned()`` (after giving back any hold it got).
        Returns how to stop it early (it then ends holding nothing), if it can be."""

    def release(self, lock: L_contra, done: Callable[[Outcome[None]], None]) -> None:
        """Start ``lock.release()``; ``done(outcome)`` on the loop (if it still runs)."""

    def stop_acquiring(self) -> list[asyncio.Future[Any]]:
        """The coordinator stops: end the acquires in flight where that is possible;
        what to await until they have ended."""
