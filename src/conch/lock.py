"""The lock contract every backend shares: :class:`Lock`.

Blocking rules, ownership by object, fencing tokens, loss reporting and what a coordinator's
stop does to waiters are the same on every backend (README, "The blocking contract" and
"Ownership, loss and tokens"); a backend supplies only a
:class:`~conch.backends.base.LockHandle`."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.errors import (
    ConchError,
    InvalidLockName,
    LockAcquireFailed,
    NotStarted,
)
from conch.hold_state import LOST, LockObject, Membership, raise_reported

log = logging.getLogger("conch")

LockName = str | bytes
Blocking = bool | float
MAX_NAME_BYTES = 64 * 1024


def name_bytes(name: str | bytes, kind: str, error: type[ConchError], max_bytes: int) -> bytes:
    """``name`` as bytes (``str`` as UTF-8), else ``error``: not ``str`` or ``bytes``, empty,
    or over ``max_bytes`` (``kind`` says what names it is, in the message)."""
    if isinstance(name, str):
        key = name.encode("utf-8", "surrogateescape")
    elif isinstance(name, bytes):
        key = name
    else:
        raise error(f"a {kind} name must be str or bytes, not {type(name).__name__}")
    if not key:
        raise error(f"a {kind} name must not be empty")
    if len(key) > max_bytes:
        raise error(f"a {kind} name must be at most {max_bytes} bytes, got {len(key)}")
    return key


def lock_key(name: LockName) -> bytes:
    """The bytes that identify ``name`` (``str`` as UTF-8, so ``"a"`` and ``b"a"`` are one lock)."""
    return name_bytes(name, "lock", InvalidLockName, MAX_NAME_BYTES)


def wait_budget(blocking: Blocking) -> float | None:
    """Seconds an acquire may wait: ``None`` forever, ``0`` one attempt."""
    if blocking is True:
        return None
    if blocking is False:
        return 0.0
    if not isinstance(blocking, (int, float)):
        raise TypeError(f"blocking must be True, False or seconds, not {type(blocking).__name__}")
    if blocking >= 0:  # False for NaN
        return None if blocking == math.inf else float(blocking)
    raise ValueError(f"blocking must be True, False or seconds >= 0, not {blocking!r}")


class LossSignal(Protocol):
    """A ``lost`` event: :class:`threading.Event` or :class:`asyncio.Event`."""

    def is_set(self) -> bool: ...


EventT = TypeVar("EventT", bound=LossSignal)
EventT_co = TypeVar("EventT_co", bound=LossSignal, covariant=True)


class HoldingLock(Protocol[EventT_co]):
    """What :class:`HeldThrough` reads of a sync or async lock."""

    @property
    def held(self) -> bool: ...

    @property
    def token(self) -> int | None: ...

    @property
    def lost(self) -> EventT_co: ...


class HeldThrough(Generic[EventT]):
    """An object that holds through a lock of its own (a semaphore's permit, an election's
    term): its token and loss are the lock's."""

    def __init__(self, lock: HoldingLock[EventT]) -> None:
        self._lock = lock

    @property
    def token(self) -> int | None:
        """The fencing token of the current hold or term (``None`` when not held)."""
        return self._lock.token

    @property
    def lost(self) -> EventT:
        """Set when the backend ended the hold or term before it was given back."""
        return self._lock.lost


_FOREVER = Deadline(None)  # immutable: every ``blocking=True`` acquire shares it


class Lock(LockObject[LockHandle]):
    """A named lock of one coordinator. Create it with ``Coordinator.lock(name)``."""

    def __init__(
        self,
        name: LockName,
        make_handle: Callable[[LossCallback], LockHandle],
        describe_error: Callable[[BaseException], str],
        membership: Membership,
    ) -> None:
        super().__init__(name, make_handle, describe_error, membership)
        # Held from the start of an acquire until release(): one hold per object.
        self._occupied = threading.Lock()

    def __repr__(self) -> str:
        return f"<conch.Lock {self.name!r} {self._state.value}>"

    def acquire(self, blocking: Blocking = True) -> bool:
        """Take the lock; see the module's table for ``blocking``. Returns whether it was taken.

        Raises :class:`BackendUnavailable` when the backend cannot be reached, and
        :class:`NotStarted` when the coordinator is stopped (before or while this
        waits). A hold the backend loses before this returns is still reported:
        ``True``, with :attr:`lost` already set.
        """
        # The uncontended path runs all of this on every acquire: kept flat.
        budget = None if blocking is True else wait_budget(blocking)
        if self._membership.stopped:
            raise NotStarted(f"{self._membership.who} was stopped: lock {self.name!r} cannot "
                             "be acquired (after start(), make a new lock object)")
        if budget is None:
            deadline = _FOREVER
            self._occupied.acquire()
        else:
            deadline = Deadline(budget)
            if not self._occupied.acquire(timeout=budget):
                return False
        if not self._start_acquiring():  # stopped while its last hold ended
            self._occupied.release()
            raise NotStarted(self._awaited())
        try:
            token = self._handle.acquire(deadline)
        except BaseException as exc:
            self._give_up_acquiring()
            if self._membership.stopped and isinstance(exc, Exception):
                raise NotStarted(self._awaited()) from None  # the backend closed under a wait
            raise_reported(exc, self._describe_error)
        if token is None:
            self._give_up_acquiring()
            if self._membership.stopped:
                raise NotStarted(self._awaited())
            return False
        if self._admit(token):
            return True
        # Granted as the coordinator stopped: its stop() did not see this hold, so
        # nobody else would ever free it.
        try:
            self._handle.release()
        except Exception as exc:
            log.warning("lock %r: %s", self.name, self._describe_error(exc))
        self._give_up_acquiring()
        raise NotStarted(self._awaited())

    def _awaited(self) -> str:
        return f"{self._membership.who} was stopped while lock {self.name!r} was awaited"

    def _give_up_acquiring(self) -> None:
        self._give_up()
        self._occupied.release()

    def release(self) -> None:
        """Free the lock. Raises :class:`LockNotHeld` when not held and :class:`LockLost`
        when the hold was lost before this call (the object is free again either way)."""
        state, backend_holds = self._start_release()
        try:
            if backend_holds:
                self._handle.release()
        except Exception as exc:
            self._release_failed(exc, state)
        finally:
            self._occupied.release()
        if state is LOST:
            raise self._lost_before_release()

    def _free_now(self) -> None:
        self._handle.release()

    def __call__(self, blocking: Blocking = True) -> _Hold:
        """A context manager: acquire with ``blocking``, else raise :class:`LockAcquireFailed`."""
        wait_budget(blocking)  # reject a bad value here, not at ``with``
        return _Hold(self, blocking)

    def __enter__(self) -> Lock:
        if not self.acquire():
            raise not_acquired(self.name, True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def waited(blocking: Blocking) -> str:
    """How an acquire that failed waited, for its message: "at once" or "within N s"."""
    return "at once" if blocking is False else f"within {blocking} s"


def not_acquired(name: LockName, blocking: Blocking) -> LockAcquireFailed:
    """The error of ``with lock(blocking):`` when the lock was not acquired."""
    return LockAcquireFailed(f"lock {name!r} not acquired {waited(blocking)}")


class _Hold:
    """``with lock(blocking):``: acquire on entry, release (or report the loss) on exit."""

    __slots__ = ("_blocking", "_lock")

    def __init__(self, lock: Lock, blocking: Blocking) -> None:
        self._lock = lock
        self._blocking = blocking

    def __enter__(self) -> Lock:
        if not self._lock.acquire(self._blocking):
            raise not_acquired(self._lock.name, self._blocking)
        return self._lock

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
