"""What :mod:`conch.aio.queue` needs of the lock objects it drives and of the way it
calls them (:class:`conch.aio.threads.ThreadCalls`: a sync :class:`conch.Lock` on
conch's threads; :class:`conch.aio.native.TaskCalls`: a NativeLock as tasks), and
the holds it grants."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from conch.lock import Blocking

if TYPE_CHECKING:
    from conch.aio.queue import NameQueue
    from conch.hold_state import Membership

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
