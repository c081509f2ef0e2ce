"""The lock contract every backend shares.

Blocking rules (the same on every backend):

============  ==============================================  ====================
``blocking``  waits                                           returns
============  ==============================================  ====================
``True``      until acquired                                  ``True``
``False``     no: one attempt                                 ``True`` / ``False``
seconds       at most that long (``0`` is one attempt)        ``True`` / ``False``
============  ==============================================  ====================

A lock is owned by the :class:`Lock` object, not by a thread: any thread may
release it, and two objects for one name exclude each other as two processes
do. Acquiring an object that already holds its lock waits for that hold to be
released, like :class:`threading.Lock`.

When the backend loses a hold before ``release()`` (session expired, lock broken,
server restarted) the holder is told: :attr:`Lock.lost` is set, :attr:`Lock.held`
turns ``False``, and ``release()`` / leaving ``with`` raises :class:`LockLost`.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Callable
from types import TracebackType

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.errors import (
    BackendUnavailable,
    ConchError,
    InvalidLockName,
    LockAcquireFailed,
    LockLost,
    LockNotHeld,
)

log = logging.getLogger("conch")

LockName = str | bytes
Blocking = bool | float
MAX_NAME_BYTES = 64 * 1024


def lock_key(name: LockName) -> bytes:
    """The bytes that identify ``name`` (``str`` as UTF-8, so ``"a"`` and ``b"a"`` are one lock)."""
    if isinstance(name, str):
        key = name.encode("utf-8", "surrogateescape")
    elif isinstance(name, bytes):
        key = name
    else:
        raise InvalidLockName(f"a lock name must be str or bytes, not {type(name).__name__}")
    if not key:
        raise InvalidLockName("a lock name must not be empty")
    if len(key) > MAX_NAME_BYTES:
        raise InvalidLockName(
            f"a lock name must be at most {MAX_NAME_BYTES} bytes, got {len(key)}"
        )
    return key


def wait_budget(blocking: Blocking) -> float | None:
    """Seconds an acquire may wait: ``None`` forever, ``0`` one attempt."""
    if blocking is True:
        return None
    if blocking is False:
        return 0.0
    if not isinstance(blocking, (int, float)):
        raise TypeError(f"blocking must be True, False or seconds, not {type(blocking).__name__}")
    if math.isnan(blocking) or blocking < 0:
        raise ValueError(f"blocking must be True, False or seconds >= 0, not {blocking!r}")
    return None if math.isinf(blocking) else float(blocking)


class _LossEvent(threading.Event):
    """:attr:`Lock.lost`: an Event that also calls the lock's loss listeners when set."""

    def __init__(self, listeners: list[Callable[[], None]]) -> None:
        super().__init__()
        self._listeners = listeners

    def set(self) -> None:
        super().set()
        for listener in self._listeners:
            listener()


class _State(enum.Enum):
    IDLE = "idle"
    ACQUIRING = "acquiring"
    HELD = "held"
    LOST = "lost"


class Lock:
    """A named lock of one coordinator. Create it with ``Coordinator.lock(name)``."""

    def __init__(
        self,
        name: LockName,
        make_handle: Callable[[LossCallback], LockHandle],
        describe_error: Callable[[BaseException], str],
        on_hold_change: Callable[[Lock, bool], None],
    ) -> None:
        self.name = name
        self._loss_listeners: list[Callable[[], None]] = []
        self.lost: threading.Event = _LossEvent(self._loss_listeners)
        """Set when a hold is lost before ``release()``; cleared by the next acquire."""
        self._describe_error = describe_error
        self._on_hold_change = on_hold_change
        # Held from the start of an acquire until release(): one hold per object.
        self._occupied = threading.Lock()
        self._mutex = threading.Lock()  # guards _state and _token
        self._state = _State.IDLE
        self._token: int | None = None
        self._backend_holds = False  # the handle still needs release()
        self._loss_while_acquiring: str | None = None
        self._handle = make_handle(self._mark_lost)

    def __repr__(self) -> str:
        return f"<conch.Lock {self.name!r} {self._state.value}>"

    @property
    def held(self) -> bool:
        """True while this object holds the lock (False once the hold is lost)."""
        return self._state is _State.HELD

    @property
    def token(self) -> int | None:
        """The fencing token of the current hold, or ``None`` when not held."""
        return self._token if self._state is _State.HELD else None

    def add_loss_listener(self, listener: Callable[[], None]) -> None:
        """Also call ``listener()`` whenever :attr:`lost` is set, on the thread that sets it
        (a backend's, or the one releasing): adapters such as :mod:`conch.aio` use it."""
        self._loss_listeners.append(listener)

    def acquire(self, blocking: Blocking = True) -> bool:
        """Take the lock; see the module's table for ``blocking``. Returns whether it was taken.

        Raises :class:`BackendUnavailable` when the backend cannot be reached. A hold
        the backend loses before this returns is still reported: ``True``, with
        :attr:`lost` already set.
        """
        deadline = Deadline(wait_budget(blocking))
        remaining = deadline.remaining()
        if not self._occupied.acquire(timeout=-1 if remaining is None else remaining):
            return False
        with self._mutex:
            self._state = _State.ACQUIRING
            self._loss_while_acquiring = None
        try:
            token = self._handle.acquire(deadline)
        except BaseException as exc:
            self._give_up_acquiring()
            if isinstance(exc, Exception) and not isinstance(exc, ConchError):
                raise BackendUnavailable(self._describe_error(exc)) from None
            raise
        if token is None:
            self._give_up_acquiring()
            return False
        with self._mutex:
            if self.lost.is_set():
                self.lost.clear()
            self._backend_holds = True
            # A loss the backend reported before we got here belongs to this hold.
            lost_reason, self._loss_while_acquiring = self._loss_while_acquiring, None
            self._state = _State.HELD if lost_reason is None else _State.LOST
            self._token = token if lost_reason is None else None
        if lost_reason is not None:
            log.warning("lock %r lost: %s", self.name, lost_reason)
            self.lost.set()
            return True
        self._on_hold_change(self, True)
        return True

    def _give_up_acquiring(self) -> None:
        with self._mutex:
            self._state = _State.IDLE
        self._occupied.release()

    def release(self) -> None:
        """Free the lock. Raises :class:`LockNotHeld` when not held and :class:`LockLost`
        when the hold was lost before this call (the object is free again either way)."""
        with self._mutex:
            state = self._state
            if state is _State.IDLE or state is _State.ACQUIRING:
                raise LockNotHeld(f"lock {self.name!r} is not held by this object")
            self._state = _State.IDLE
            self._token = None
            backend_holds, self._backend_holds = self._backend_holds, False
        self._on_hold_change(self, False)
        try:
            if backend_holds:
                self._handle.release()
        except LockLost:  # the backend found the hold gone only now
            self.lost.set()
            raise
        except Exception as exc:
            if state is _State.HELD:
                if isinstance(exc, ConchError):
                    raise
                raise BackendUnavailable(self._describe_error(exc)) from None
        finally:
            self._occupied.release()
        if state is _State.LOST:
            raise LockLost(f"lock {self.name!r} was lost before it was released")

    def _mark_lost(self, reason: str) -> None:
        """Record that the backend lost this hold (called by the backend, any thread)."""
        with self._mutex:
            if self._state is _State.ACQUIRING:
                self._loss_while_acquiring = reason
                return
            if self._state is not _State.HELD:
                return
            self._state = _State.LOST
            self._token = None
        log.warning("lock %r lost: %s", self.name, reason)
        self.lost.set()
        self._on_hold_change(self, False)

    def _abandon(self, reason: str) -> None:
        """Free the backend's hold now and report it lost (the coordinator is stopping)."""
        self._mark_lost(reason)
        with self._mutex:
            backend_holds, self._backend_holds = self._backend_holds, False
        if backend_holds:
            try:
                self._handle.release()
            except Exception as exc:
                log.warning("lock %r: %s", self.name, self._describe_error(exc))

    def __call__(self, blocking: Blocking = True) -> _Hold:
        """A context manager: acquire with ``blocking``, else raise :class:`LockAcquireFailed`."""
        wait_budget(blocking)  # reject a bad value here, not at ``with``
        return _Hold(self, blocking)

    def __enter__(self) -> Lock:
        return _Hold(self, True).__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class _Hold:
    """``with lock(blocking):``: acquire on entry, release (or report the loss) on exit."""

    __slots__ = ("_blocking", "_lock")

    def __init__(self, lock: Lock, blocking: Blocking) -> None:
        self._lock = lock
        self._blocking = blocking

    def __enter__(self) -> Lock:
        if not self._lock.acquire(self._blocking):
            raise LockAcquireFailed(
                f"lock {self._lock.name!r} not acquired "
                f"{'at once' if self._blocking is False else f'within {self._blocking} s'}"
            )
        return self._lock

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()
