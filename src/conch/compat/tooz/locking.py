"""``tooz.locking``: the :class:`Lock` base class (tooz's constructor and context manager, for
services that subclass it) and :class:`ConchLock`, what ``get_lock`` returns: conch's
contract where tooz's drivers disagree (timed waits return ``False``, a lost hold makes
``release()`` return ``False`` and leaving ``with`` raise ``LockLost``, no ``heartbeat()``
needed). README, "Behaviour differences", has the table."""

from __future__ import annotations

import abc
import logging
from types import TracebackType
from typing import Any, Generic, TypeVar

import conch
from conch.compat.tooz import errors
from conch.compat.tooz.errors import LockAcquireFailed, as_tooz_errors
from conch.lock import LockName

log = logging.getLogger("conch")

_L = TypeVar("_L", bound="Lock")


class _LockProxy(Generic[_L]):
    """What ``lock(blocking)`` returns: a context manager acquiring with those arguments."""

    __slots__ = ("_args", "_kwargs", "_lock")

    def __init__(self, lock: _L, *args: Any, **kwargs: Any) -> None:
        self._lock = lock
        self._args = args
        self._kwargs = kwargs

    def __enter__(self) -> _L:
        return self._lock.__enter__(*self._args, **self._kwargs)

    def __exit__(self, *exc_info: Any) -> None:
        self._lock.__exit__(*exc_info)


class Lock(abc.ABC):
    """tooz's lock interface: subclasses implement ``acquire`` and ``release``."""

    def __init__(self, name: LockName) -> None:
        if not name:
            raise ValueError("a lock needs a non-empty name")
        self._name = name

    @property
    def name(self) -> LockName:
        """The name given to the constructor (``bytes`` from ``get_lock(b"...")``)."""
        return self._name

    def __call__(self: _L, *args: Any, **kwargs: Any) -> _LockProxy[_L]:
        """``with lock(blocking, shared, timeout):`` — raises :class:`LockAcquireFailed`."""
        return _LockProxy(self, *args, **kwargs)

    def __enter__(
        self: _L, blocking: bool | float = True, shared: bool = False, timeout: float | None = None
    ) -> _L:
        # Pass only what the caller gave: tooz 9 always passes all three, which breaks
        # subclasses whose acquire() takes only ``blocking`` (Cinder's MockToozLock).
        if shared or timeout is not None:
            acquired = self.acquire(blocking, shared, timeout)
        else:
            acquired = self.acquire(blocking)
        if not acquired:
            name = self.name.decode("utf-8", "backslashreplace") if isinstance(
                self.name, bytes) else self.name
            raise LockAcquireFailed(f"could not acquire lock {name}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    @abc.abstractmethod
    def acquire(
        self, blocking: bool | float = True, shared: bool = False, timeout: float | None = None
    ) -> bool:
        """Take the lock: ``blocking`` True (wait, at most ``timeout`` s if given), False
        (one attempt) or seconds. Returns whether it was taken."""

    @abc.abstractmethod
    def release(self) -> bool:
        """Free the lock; returns whether it was released."""

    def is_still_owner(self) -> bool:
        """Whether the lock is still held by this object; tooz's default: not implemented."""
        raise errors.NotImplemented("is_still_owner() is not implemented by this lock")

    def break_(self) -> bool:
        """Free the lock whoever holds it; tooz's default: not implemented."""
        raise errors.NotImplemented("break_() is not implemented by this lock")


class ConchLock(Lock):
    """A tooz lock backed by conch's lock of the same name: ``conch_lock`` is the
    :class:`conch.Lock` of its current or last hold (exclusive, or shared after
    ``acquire(shared=True)``), with that hold's token and ``lost``."""

    def __init__(self, name: LockName, lock: conch.Lock, coordinator: conch.Coordinator) -> None:
        super().__init__(name)
        self.conch_lock = lock
        self._exclusive = lock
        self._shared: conch.Lock | None = None
        self._coordinator = coordinator
        self._backend = coordinator.url.partition("://")[0]

    def __repr__(self) -> str:
        return f"<conch.compat.tooz.ConchLock {self.name!r} on {self._backend}>"

    def acquire(
        self,
        blocking: bool | float | str = True,
        shared: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """Take the lock (see :meth:`Lock.acquire`). ``shared=True`` takes a shared hold
        (``coordinator.lock(name, shared=True)``: shared holds coexist, an exclusive one
        excludes them all) where the backend has conch's ``shared_locks`` capability, and
        raises :class:`NotImplemented` elsewhere, as tooz's drivers do."""
        wait = _wait(blocking, timeout)
        lock = self._shared_lock() if shared else self._exclusive
        with as_tooz_errors():
            acquired = lock.acquire(wait)
        if acquired:
            self.conch_lock = lock
        return acquired

    def _shared_lock(self) -> conch.Lock:
        if self._shared is None:
            if not self._coordinator.capabilities.shared_locks:
                raise errors.NotImplemented(
                    f"shared locks are not provided by conch's {self._backend} backend")
            with as_tooz_errors():
                self._shared = self._coordinator.lock(self.name, shared=True)
        return self._shared

    def release(self) -> bool:
        """Free the lock: ``True``, or ``False`` when not held or lost before this call."""
        try:
            with as_tooz_errors():
                self.conch_lock.release()
        except conch.LockNotHeld:
            return False
        except conch.LockLost:
            log.warning("lock %r was lost before release(): returning False", self.name)
            return False
        return True

    def __exit__(self, *exc_info: object) -> None:
        lost = self.conch_lock.lost.is_set()
        if not self.release() and lost:
            raise errors.LockLost(f"lock {self.name!r} was lost before the with block ended")

    def is_still_owner(self) -> bool:
        """True while this object holds the lock; False once it is released or lost."""
        return self.conch_lock.held

    def break_(self) -> bool:
        """Free the lock whoever holds it; True if it was held. Its holder is told it lost
        it (at its next renewal or session check). Raises :class:`NotImplemented` unless
        the backend has conch's ``breakable`` capability."""
        with as_tooz_errors():
            return self._coordinator.break_lock(self.name).holder is not None


def _wait(blocking: bool | float | str, timeout: float | None) -> bool | float:
    """tooz's ``blocking``/``timeout`` pair as conch's ``blocking``."""
    if isinstance(blocking, bool):
        return timeout if blocking and timeout is not None else blocking
    try:
        return float(blocking)  # tooz accepts any number, even "5"
    except (TypeError, ValueError):
        raise TypeError(f"blocking must be True, False or seconds, not {blocking!r}") from None
