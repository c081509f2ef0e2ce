"""Contenders every server module compares: conch itself and tooz's driver for the server."""

from __future__ import annotations

import uuid
from typing import Any

from tooz import coordination

import conch
from benchmarks.contenders.base import Contender, LockLike


class TimedWait:
    """A library's lock whose every acquire is a timed wait: ``acquire(**wait)``, e.g.
    ``blocking=60`` (conch, tooz) or ``timeout=60`` (kazoo)."""

    def __init__(self, lock: Any, **wait: float) -> None:
        self._lock = lock
        self._wait = wait

    def acquire(self) -> object:
        return self._lock.acquire(**self._wait)

    def release(self) -> object:
        return self._lock.release()


class Conch(Contender):
    """``conch.connect(target)``: one coordinator (one session) per process."""

    name = "conch"
    distribution = "conch"

    def setup(self) -> None:
        self._coordinator = conch.connect(self.target)

    def lock(self, name: str) -> LockLike:
        return self._coordinator.lock(name)

    def teardown(self) -> None:
        self._coordinator.stop()


class Tooz(Contender):
    """tooz's driver for the server: a started coordinator's ``get_lock``."""

    name = "tooz"
    distribution = "tooz"

    def tooz_url(self) -> str:
        """The URL tooz is given (the target unless the schemes differ)."""
        return self.target

    def setup(self) -> None:
        member_id = f"bench-{uuid.uuid4()}".encode()
        self._coordinator: Any = coordination.get_coordinator(self.tooz_url(), member_id)
        self._coordinator.start()

    def lock(self, name: str) -> LockLike:
        lock: LockLike = self._coordinator.get_lock(name.encode())
        return lock

    def teardown(self) -> None:
        self._coordinator.stop()
