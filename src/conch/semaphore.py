"""Semaphores: :class:`Semaphore`, from ``coordinator.semaphore(name, limit)``. An object holds
one permit at a time with a lock's whole contract (blocking rules, a fencing token strictly
increasing across the name's holds, ``lost``, ``LockLost`` on a release after a loss,
``NotStarted`` after stop); at most ``limit`` objects hold at once. One name used with two
limits raises :class:`conch.LimitMismatch`.
"""

from __future__ import annotations

import threading

from conch.lock import Blocking, HeldThrough, Lock, _Hold


class Semaphore(HeldThrough[threading.Event]):
    """One holder's permit of a semaphore (make it with ``coordinator.semaphore``)."""

    _lock: Lock

    def __init__(self, lock: Lock, limit: int) -> None:
        super().__init__(lock)
        self.name = lock.name
        self.limit = limit

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        return f"<conch.Semaphore {self.name!r} limit {self.limit} {state}>"

    @property
    def held(self) -> bool:
        """True while this object holds a permit (and has not lost it)."""
        return self._lock.held

    def acquire(self, blocking: Blocking = True) -> bool:
        """Take a permit, waiting as ``blocking`` says (a lock's rules); whether it did."""
        return self._lock.acquire(blocking)

    def release(self) -> None:
        """Give the permit back (:class:`conch.LockNotHeld`, :class:`conch.LockLost` as
        a lock's release)."""
        self._lock.release()

    def __call__(self, blocking: Blocking = True) -> _Hold:
        """``with sem(blocking=5):`` take a permit (else :class:`conch.LockAcquireFailed`)."""
        return self._lock(blocking)

    def __enter__(self) -> Semaphore:
        self._lock.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
