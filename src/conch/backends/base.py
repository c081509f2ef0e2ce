"""The contract a backend implements; everything shared lives in :mod:`conch.lock`.

A backend owns the coordinator's connection and session (liveness: lease,
heartbeat, connection) and hands out one :class:`LockHandle` per lock object.
The handle only acquires and releases; blocking rules, ownership, tokens and
loss reporting are the caller's (:class:`conch.lock.Lock`).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable
from typing import ClassVar

from conch.capabilities import Capabilities
from conch.errors import NotSupported
from conch.introspection import LockInfo
from conch.url import BackendURL

LossCallback = Callable[[str], None]
"""Called by a backend, from any thread, with a reason when a hold is lost."""


class Deadline:
    """When a wait must end: ``None`` seconds means never. Uses the monotonic clock."""

    __slots__ = ("_end",)

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    @property
    def forever(self) -> bool:
        """True when the wait has no end."""
        return self._end is None

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` when waiting forever."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        """True once no time is left."""
        return self._end is not None and time.monotonic() >= self._end


class LockHandle(abc.ABC):
    """One lock object's connection to its backend lock.

    The caller guarantees a handle is never acquired twice without a release in
    between, and never released when not held.
    """

    @abc.abstractmethod
    def acquire(self, deadline: Deadline) -> int | None:
        """Take the lock before ``deadline``; return the hold's fencing token, or ``None``.

        Always tries at least once, even when the deadline has passed. On any
        exception the lock must be left not held. Raise only :class:`conch.ConchError`
        subclasses for known failures; anything else is reported as unavailable.
        """

    @abc.abstractmethod
    def release(self) -> None:
        """Free the lock (best effort when the hold was already lost).

        Raise :class:`conch.LockLost` when the lock turns out to be no longer this
        hold's (expired, taken over): the caller must hear of it, not a silent release.
        """


class AsyncLockHandle(abc.ABC):
    """A :class:`LockHandle` for asyncio, used only on the event loop that made it.

    The same contract as :class:`LockHandle`, awaited, never blocking the loop. The
    caller (:class:`conch.aio.native.NativeLock`) also guarantees :meth:`abandon` and
    :meth:`release` are never both called for one hold.
    """

    @abc.abstractmethod
    async def acquire(self, deadline: Deadline) -> int | None:
        """As :meth:`LockHandle.acquire`, awaited.

        When the awaiting task is cancelled, the lock must be left not held before
        ``CancelledError`` propagates, or be freed promptly by what the handle does
        (for instance dropping the connection that holds it): a cancelled acquire
        leaves nothing held.
        """

    @abc.abstractmethod
    async def release(self) -> None:
        """As :meth:`LockHandle.release`, awaited."""

    @abc.abstractmethod
    def abandon(self) -> None:
        """Free the current hold now, from any thread and without the event loop (the
        coordinator is stopping; the loop may be busy or closed). Best effort, never
        raises; called only while the handle holds the lock."""


class GroupStore(abc.ABC):
    """A backend's group membership (capability ``groups``); names and data are opaque bytes.

    A member is the coordinator's ``member_id``; its entry is kept alive by the backend's
    session, as its holds are, and freed when the session ends or the process dies.
    """

    poll_interval: float = 1.0
    """Seconds between two reads of a watched group's members when no change is pushed."""

    @abc.abstractmethod
    def create(self, group: bytes) -> bool:
        """Create ``group``; ``False`` when it already existed."""

    @abc.abstractmethod
    def delete(self, group: bytes) -> None:
        """Delete ``group``: :class:`conch.GroupNotFound`, or :class:`conch.GroupNotEmpty`
        while a live member is in it."""

    @abc.abstractmethod
    def names(self) -> list[bytes]:
        """Every group that exists."""

    @abc.abstractmethod
    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        """Enter ``group`` with ``data``, or replace the data when already in it
        (:class:`conch.GroupNotFound` when it does not exist). ``on_lost`` is called, from
        any thread, when the server drops the entry (session or lease lost)."""

    @abc.abstractmethod
    def leave(self, group: bytes) -> bool:
        """Leave ``group``; ``False`` when this member was not in it."""

    @abc.abstractmethod
    def members(self, group: bytes) -> dict[str, bytes] | None:
        """The live members' data by member id (``None``: no such group)."""

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed`` (any thread) when ``group``'s members may have changed; returns
        the way to stop. Without it (the default) watchers read every :attr:`poll_interval`."""
        return lambda: None


class Backend(abc.ABC):
    """A coordinator's connection to one server: its session and its lock handles."""

    capabilities: ClassVar[Capabilities]

    def __init__(self, url: BackendURL, member_id: str) -> None:
        """Check ``url`` (raise :class:`conch.InvalidURL`); do no I/O."""
        self.url = url
        self.member_id = member_id

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection and start the session; raise :class:`conch.BackendUnavailable`."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the session; the locks it kept alive are freed. Never raises."""

    @abc.abstractmethod
    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        """A handle for the lock named ``key`` (already validated, at most 64 KiB)."""

    def shared_handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        """A handle for a shared hold of lock ``key``: shared holds coexist, an exclusive
        one (:meth:`handle`) excludes them; a waiting exclusive hold is not starved by new
        shared ones. Declared by ``shared_locks``."""
        raise NotSupported(f"the {self.url.scheme} backend has no shared locks")

    def semaphore_handle(self, key: bytes, limit: int, on_lost: LossCallback) -> LockHandle:
        """A handle for one of ``limit`` permits of semaphore ``key`` (a namespace apart
        from the locks'); its acquire raises :class:`conch.LimitMismatch` when the holders
        use another limit. Declared by ``semaphores``."""
        raise NotSupported(f"the {self.url.scheme} backend has no semaphores")

    # Native asyncio (optional): a backend that implements these declares
    # ``native_async`` in its capabilities; :mod:`conch.aio` uses threads otherwise.

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        """As :meth:`handle`, for asyncio; called on the event loop that will use it.

        Loss is reported through ``on_lost`` from any thread, as for :meth:`handle`.
        """
        raise NotSupported(f"the {self.url.scheme} backend has no native asyncio support")

    async def close_async(self) -> None:
        """Close what the async handles opened on the running event loop (idle
        connections, descriptors). ``AsyncCoordinator.stop()`` awaits it on its loop
        after :meth:`close` (every hold is abandoned by then); what other loops opened
        is left to the garbage collector. Never raises."""
        return None

    def groups(self) -> GroupStore:
        """The group membership of this connection (called once, after :meth:`connect`)."""
        raise NotSupported(f"the {self.url.scheme} backend has no group membership")

    # Introspection (optional): a backend that implements these declares
    # ``introspection`` / ``breakable`` in its capabilities.

    def describe_lock(self, key: bytes) -> LockInfo:
        """Lock ``key`` as the server sees it now: its holder (``None``: free) and waiters."""
        raise NotSupported(f"the {self.url.scheme} backend cannot describe its locks")

    def list_locks(self, prefix: bytes) -> Iterable[LockInfo]:
        """The locks held now; those whose name starts with ``prefix`` at least (the
        caller filters and sorts)."""
        raise NotSupported(f"the {self.url.scheme} backend cannot list its locks")

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        """Free lock ``key``, whoever holds it, so that the holder learns it lost it.

        With ``token``, only the hold with that fencing token is broken: raise
        :class:`conch.HolderChanged` when another hold (or none) has the
        lock. Returns the lock as it was just before (``holder`` ``None``: it was free
        and nothing was done). Raise :class:`conch.BreakRefused` when
        the server refuses for lack of rights.
        """
        raise NotSupported(f"the {self.url.scheme} backend cannot break locks")
