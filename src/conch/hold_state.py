"""Where a lock object's hold stands: the bookkeeping shared by the sync and async locks.

:class:`conch.Lock` (blocking handles) and :class:`conch.aio.native.NativeLock`
(asyncio handles) differ only in how they call their backend handle; the states,
the fencing token, loss reporting and what ``release()`` raises are kept here,
once. Every method is thread-safe: a backend reports losses from its own threads.
"""

from __future__ import annotations

import abc
import enum
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from conch.errors import BackendUnavailable, ConchError, LockLost, LockNotHeld

log = logging.getLogger("conch")


def reported(exc: BaseException, describe_error: Callable[[BaseException], str]) -> BaseException:
    """What a lock raises for ``exc`` from its handle: conch's errors and
    ``BaseException`` as they are, anything else as :class:`BackendUnavailable`."""
    if isinstance(exc, Exception) and not isinstance(exc, ConchError):
        return BackendUnavailable(describe_error(exc))
    return exc


class Holding(Protocol):
    """A lock object with a hold, which its coordinator frees when it stops."""

    def _abandon(self, reason: str) -> None: ...


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


class HoldState:
    """The state, token and loss of one lock object's hold.

    ``on_hold_change(owner, held)`` is told when a hold starts and ends (the
    coordinator keeps held locks, to abandon them when it stops).
    """

    def __init__(self, name: str | bytes, owner: Holding,
                 on_hold_change: Callable[[Holding, bool], None]) -> None:
        self.name = name
        self.lost = LossEvent()
        self._owner = owner
        self._on_hold_change = on_hold_change
        self._mutex = threading.Lock()
        self.state = State.IDLE
        self._token: int | None = None
        self._backend_holds = False  # the handle still needs release()
        self._loss_while_acquiring: str | None = None

    @property
    def token(self) -> int | None:
        """The current hold's fencing token, ``None`` when not held."""
        return self._token if self.state is State.HELD else None

    def start_acquiring(self) -> None:
        """An acquire begins (the caller ensures no hold is in progress)."""
        with self._mutex:
            self.state = State.ACQUIRING
            self._loss_while_acquiring = None

    def give_up(self) -> None:
        """The acquire ended without a hold."""
        with self._mutex:
            self.state = State.IDLE

    def acquired(self, token: int) -> None:
        """The backend granted a hold; a loss it reported meanwhile belongs to this hold."""
        with self._mutex:
            if self.lost.is_set():
                self.lost.clear()
            self._backend_holds = True
            lost_reason, self._loss_while_acquiring = self._loss_while_acquiring, None
            self.state = State.HELD if lost_reason is None else State.LOST
            self._token = token if lost_reason is None else None
        if lost_reason is not None:
            log.warning("lock %r lost: %s", self.name, lost_reason)
            self.lost.set()
        else:
            self._on_hold_change(self._owner, True)

    def start_release(self) -> tuple[State, bool]:
        """A release begins: the state it ends and whether the handle must be released.

        Raises :class:`LockNotHeld` when there is no hold to release.
        """
        with self._mutex:
            state = self.state
            if state is State.IDLE or state is State.ACQUIRING:
                raise LockNotHeld(f"lock {self.name!r} is not held by this object")
            self.state = State.IDLE
            self._token = None
            backend_holds, self._backend_holds = self._backend_holds, False
        self._on_hold_change(self._owner, False)
        return state, backend_holds

    def release_failed_lost(self) -> None:
        """The handle's release found the hold gone: it is reported lost."""
        self.lost.set()

    def released(self, state: State) -> None:
        """The release is done; raise :class:`LockLost` if the hold was lost before it."""
        if state is State.LOST:
            raise LockLost(f"lock {self.name!r} was lost before it was released")

    def mark_lost(self, reason: str) -> None:
        """The backend lost the hold (any thread)."""
        with self._mutex:
            if self.state is State.ACQUIRING:
                self._loss_while_acquiring = reason
                return
            if self.state is not State.HELD:
                return
            self.state = State.LOST
            self._token = None
        log.warning("lock %r lost: %s", self.name, reason)
        self.lost.set()
        self._on_hold_change(self._owner, False)

    def abandon(self, reason: str) -> bool:
        """The coordinator stops: report the hold lost; whether the handle still holds it
        (then the caller frees it, and ``release()`` will not)."""
        self.mark_lost(reason)
        with self._mutex:
            backend_holds, self._backend_holds = self._backend_holds, False
        return backend_holds


class Membership:
    """One start-to-stop of a coordinator: the holds of its lock objects (freed when it
    stops), and whether they may still take one."""

    def __init__(self, who: str) -> None:
        self.who = who
        """The coordinator, for error messages."""
        self.stopped = False
        # Reentrant: recording a hold (track) happens inside admit().
        self._mutex = threading.RLock()
        self._held: set[Holding] = set()  # strong: a held lock is never garbage-collected

    def track(self, lock: Holding, held: bool) -> None:
        """``on_hold_change`` of its lock objects: a hold starts or ends."""
        with self._mutex:
            if held:
                self._held.add(lock)
            else:
                self._held.discard(lock)

    def admit(self, state: HoldState, token: int) -> bool:
        """Record the hold the backend granted ``state``'s lock, unless the coordinator
        stopped: then the caller must give it back. (:meth:`stop` waits for this, so a
        hold is either in what it returns or refused.)"""
        with self._mutex:
            if self.stopped:
                return False
            state.acquired(token)
            return True

    def stop(self) -> list[Holding]:
        """The coordinator stops: the lock objects holding now, to abandon; no hold is
        admitted from now on."""
        with self._mutex:
            self.stopped = True
            held, self._held = list(self._held), set()
        return held


class LockObject(abc.ABC):
    """What the sync and async lock objects share: their name, hold state and loss event.

    ``membership``: the coordinator's start-to-stop whose holds ``on_hold_change``
    records; once it stops, acquiring raises :class:`conch.NotStarted` (``None``: never).
    """

    def __init__(self, name: str | bytes, describe_error: Callable[[BaseException], str],
                 on_hold_change: Callable[[Holding, bool], None],
                 membership: Membership | None) -> None:
        self.name = name
        self._membership = membership
        self._state = HoldState(name, self, on_hold_change)
        self.lost: threading.Event = self._state.lost
        """Set when a hold is lost before ``release()``; cleared by the next acquire."""
        self._describe_error = describe_error

    @property
    def held(self) -> bool:
        """True while this object holds the lock (False once the hold is lost)."""
        return self._state.state is State.HELD

    @property
    def token(self) -> int | None:
        """The fencing token of the current hold, or ``None`` when not held."""
        return self._state.token

    def add_loss_listener(self, listener: Callable[[], None]) -> None:
        """Also call ``listener()`` whenever :attr:`lost` is set, on the thread that sets it
        (a backend's, or the one releasing): adapters such as :mod:`conch.aio` use it."""
        self._state.lost.listeners.append(listener)

    def _abandon(self, reason: str) -> None:
        """Report the hold lost and free it now, from any thread (the coordinator is
        stopping); a later ``release()`` then raises :class:`LockLost` only."""
        if self._state.abandon(reason):
            try:
                self._free_now()
            except Exception as exc:
                log.warning("lock %r: %s", self.name, self._describe_error(exc))

    @abc.abstractmethod
    def _free_now(self) -> None:
        """Free the backend's hold from the calling thread (never waits for a loop)."""
