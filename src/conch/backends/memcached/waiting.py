"""How a ``memcached://`` waiter waits, memcached being unable to notify: a release wakes
this process's waiters on that lock at once (:data:`LOCAL_RELEASES`); waiters in other
processes poll after :func:`pauses` (docs/memcached.md, "Wait")."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
from collections.abc import Iterator

from conch.backends.kit.fork import forget_in_child

FIRST_PAUSE, MAX_PAUSE = 0.001, 0.005


def pauses() -> Iterator[float]:
    """One waiter's pauses: from 1 ms, doubling up to 5 ms, each drawn from its upper half
    so that waiters do not poll in step."""
    ceiling = FIRST_PAUSE
    while True:
        yield random.uniform(ceiling / 2, ceiling)
        ceiling = min(ceiling * 2, MAX_PAUSE)


@dataclasses.dataclass(eq=False)
class Watch:
    """The releases of one key in this process (compare :attr:`releases`, do not count)."""

    changed: threading.Condition
    releases: int = 0
    watchers: int = 0

    def wait(self, seen: int, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or less if a release came since ``releases`` was ``seen``."""
        with self.changed:
            self.changed.wait_for(lambda: self.releases != seen, timeout)


class LocalReleases:
    """Per lock key waited for, the releases made in this process by any coordinator."""

    def __init__(self) -> None:
        self.forget_parent()
        forget_in_child(self)

    def forget_parent(self) -> None:
        """A forked child has none of its parent's waiters (and maybe a held mutex)."""
        self._mutex = threading.Lock()
        self._watched: dict[bytes, Watch] = {}

    @contextlib.contextmanager
    def watching(self, key: bytes) -> Iterator[Watch]:
        """Watch ``key`` for the block (from before the first attempt: no release is missed)."""
        with self._mutex:
            watch = self._watched.get(key) or Watch(threading.Condition(self._mutex))
            self._watched[key] = watch
            watch.watchers += 1
        try:
            yield watch
        finally:
            with self._mutex:
                watch.watchers -= 1
                if not watch.watchers:
                    del self._watched[key]

    def released(self, key: bytes) -> None:
        """Wake this process's waiters on ``key``."""
        with self._mutex:
            if watch := self._watched.get(key):
                watch.releases += 1
                watch.changed.notify_all()


LOCAL_RELEASES = LocalReleases()
