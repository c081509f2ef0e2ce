"""Where a lock object's hold stands: the bookkeeping shared by the sync and async locks.

:class:`conch.Lock` (blocking handles) and :class:`conch.aio.native.NativeLock` (asyncio
handles) differ only in how they call their backend handle; the states, the fencing token,
loss reporting and the coordinator's record of held locks are kept here, once, under one
mutex per coordinator (a backend reports losses from its own threads).
"""

from __future__ import annotations

import abc
import enum
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, NoReturn, TypeVar

from conch.backends.base import LossCallback
from conch.errors import BackendUnavailable, ConchError, LockLost, LockNotHeld

HandleT = TypeVar("HandleT")

log = logging.getLogger("conch")


def raise_reported(exc: BaseException,
                   describe_error: Callable[[BaseException], str]) -> NoReturn:
    """Raise ``exc``, which a lock's handle raised (call it in the ``except`` block): conch's
    errors and ``BaseException`` as they are, anything else as :class:`BackendUnavailable`."""
    if isinstance(exc, Exception) and not isinstance(exc, ConchError):
        raise BackendUnavailable(describe_error(exc)) from None
    raise exc


class LossEvent(threading.Event):
    """``lock.lost``: an Event that also calls the lock's loss listeners when set."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Callable[[], None]] = []

    def set(self) -> None:
        super().set()
        for listener in self.listeners:
            listener()


class State(enum.Enum):
    """A lock object's state: one hold at a time."""

    IDLE = "idle"
    ACQUIRING = "acquiring"
    HELD = "held"
    LOST = "lost"


# Module constants: reading an Enum member through its class costs as much as a lock.
IDLE, ACQUIRING, HELD, LOST = State


class Membership:
    """One start-to-stop of a coordinator: the lock objects holding now (freed when it
    stops), whether they may still take a hold, and the mutex of their states."""

    def __init__(self, who: str) -> None:
        self.who = who
        """The coordinator, for error messages."""
        self.stopped = False
        # Guards ``stopped``, ``held`` and every state of its lock objects: a hold is
        # recorded in the same step as its grant, so stop() sees it or it is refused.
        self.mutex = threading.Lock()
        self.held: set[LockObject[Any]] = set()  # strong: a held lock is never garbage-collected

    def stop(self) -> list[LockObject[Any]]:
        """The coordinator stops: the lock objects holding now, to abandon; no hold is
        admitted from now on."""
        with self.mutex:
            self.stopped = True
            held, self.held = list(self.held), set()
        return held


class LockObject(abc.ABC, Generic[HandleT]):
    """What the sync and async lock objects share: their name, hold state, loss event and the
    backend's handle (made by ``make_handle`` with the callback that reports a loss).

    Once ``membership`` (the coordinator's start-to-stop) stops, acquiring raises
    :class:`conch.NotStarted`. The caller ensures one acquire or release at a time.
    """

    def __init__(self, name: str | bytes, make_handle: Callable[[LossCallback], HandleT],
                 describe_error: Callable[[BaseException], str], membership: Membership) -> None:
        self.name = name
        self._membership = membership
        self._mutex = membership.mutex
        self._describe_error = describe_error
        self._state = IDLE
        self._token: int | None = None
        self._backend_holds = False  # the handle still needs release()
        self._loss_while_acquiring: str | None = None
        self._lost = LossEvent()
        self.lost: threading.Event = self._lost
        """Set when a hold is lost before ``release()``; cleared by the next acquire."""
        self._handle = make_handle(self._mark_lost)

    @property
    def held(self) -> bool:
        """True while this object holds the lock (False once the hold is lost)."""
        return self._state is HELD

    @property
    def token(self) -> int | None:
        """The fencing token of the current hold, or ``None`` when not held."""
        return self._token

    def add_loss_listener(self, listener: Callable[[], None]) -> None:
        """Also call ``listener()`` whenever :attr:`lost` is set, on the thread that sets it
        (a backend's, or the one releasing): adapters such as :mod:`conch.aio` use it."""
        self._lost.listeners.append(listener)

    # The steps of every acquire and release call the mutex's acquire() and release():
    # CPython 3.11 runs a ``with`` block on a lock markedly slower.

    def _start_acquiring(self) -> bool:
        """An acquire begins, unless the coordinator stopped (then ``False``). One store,
        no mutex: the acquire that ended before left no loss recorded."""
        if self._membership.stopped:
            return False
        self._state = ACQUIRING
        return True

    def _give_up(self) -> None:
        """The acquire ended without a hold."""
        mutex = self._mutex
        mutex.acquire()
        self._state = IDLE
        self._loss_while_acquiring = None
        mutex.release()

    def _admit(self, token: int) -> bool:
        """The backend granted a hold with ``token``: record it, unless the coordinator
        stopped (``False``: the caller must give it back, as stop() did not see it). A
        loss the backend reported while acquiring belongs to this hold."""
        mutex = self._mutex
        mutex.acquire()
        try:
            if self._membership.stopped:
                return False
            if self._lost.is_set():
                self._lost.clear()
            self._backend_holds = True
            lost_reason, self._loss_while_acquiring = self._loss_while_acquiring, None
            if lost_reason is None:
                self._state = HELD
                self._token = token
                self._membership.held.add(self)
                return True
            self._state = LOST
        finally:
            mutex.release()
        self._report_loss(lost_reason)
        return True

    def _start_release(self) -> tuple[State, bool]:
        """A release begins: the state it ends and whether the handle must be released.

        Raises :class:`LockNotHeld` when there is no hold to release.
        """
        mutex = self._mutex
        mutex.acquire()
        try:
            state = self._state
            if state is IDLE or state is ACQUIRING:
                raise LockNotHeld(f"lock {self.name!r} is not held by this object")
            self._state = IDLE
            self._token = None
            backend_holds, self._backend_holds = self._backend_holds, False
            self._membership.held.discard(self)
        finally:
            mutex.release()
        return state, backend_holds

    def _release_failed(self, exc: Exception, state: State) -> None:
        """The handle's release raised ``exc`` (call it in the ``except`` block): a loss the
        backend found only now sets :attr:`lost` and is raised; any other error is raised
        unless the hold was already lost."""
        if isinstance(exc, LockLost):
            self._lost.set()
            raise exc
        if state is HELD:
            raise_reported(exc, self._describe_error)

    def _lost_before_release(self) -> LockLost:
        return LockLost(f"lock {self.name!r} was lost before it was released")

    def _mark_lost(self, reason: str) -> None:
        """The backend lost the hold (any thread): its loss callback."""
        with self._mutex:
            news = self._lose(reason)
        if news:
            self._report_loss(reason)

    def _lose(self, reason: str) -> bool:
        """Under the mutex: the hold is lost; whether that is news to report."""
        if self._state is ACQUIRING:
            self._loss_while_acquiring = reason
            return False
        if self._state is not HELD:
            return False
        self._state = LOST
        self._token = None
        self._membership.held.discard(self)
        return True

    def _report_loss(self, reason: str) -> None:
        log.warning("lock %r lost: %s", self.name, reason)
        self._lost.set()

    def _abandon(self, reason: str) -> None:
        """Report the hold lost and free it now, from any thread (the coordinator is
        stopping); a later ``release()`` then raises :class:`LockLost` only."""
        with self._mutex:
            news = self._lose(reason)
            backend_holds, self._backend_holds = self._backend_holds, False
        if news:
            self._report_loss(reason)
        if backend_holds:
            try:
                self._free_now()
            except Exception as exc:
                log.warning("lock %r: %s", self.name, self._describe_error(exc))

    @abc.abstractmethod
    def _free_now(self) -> None:
        """Free the backend's hold from the calling thread (never waits for a loop)."""
