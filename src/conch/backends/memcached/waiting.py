"""How a ``memcached://`` waiter waits, since memcached cannot notify: a release in this
process wakes this process's waiters on that lock at once (:data:`LOCAL_RELEASES`);
waiters in other processes poll after :func:`pauses` (docs/memcached.md, "Wait")."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
from collections.abc import Iterator

from conch.backends.kit.fork import forget_in_child

FIRST_PAUSE = 0.001
MAX_PAUSE = 0.010


def pauses() -> Iterator[float]:
    """One waiter's pauses: from 1 ms, doubling up to 10 ms, each drawn at random from
    its upper half so that waiters do not poll in step."""
    ceiling = FIRST_PAUSE
    while True:
        yield random.uniform(ceiling / 2, ceiling)
        ceiling = min(ceiling * 2, MAX_PAUSE)


@dataclasses.dataclass
class Watch:
    """The releases of one key made in this process, while someone waits for it."""

    changed: threading.Condition
    releases: int = 0
    """How many so far (compare, do not count)."""
    watchers: int = 0

    def wait(self, seen: int, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or less if a release came after ``releases`` was ``seen``."""
        with self.changed:
            self.changed.wait_for(lambda: self.releases != seen, timeout)


class LocalReleases:
    """Per lock key, the releases made in this process (every coordinator's), for its waiters."""

    def __init__(self) -> None:
        self.forget_parent()
        forget_in_child(self)

    def forget_parent(self) -> None:
        """A forked child has none of its parent's waiting threads (and maybe a held mutex)."""
        self._mutex = threading.Lock()
        self._watched: dict[bytes, Watch] = {}

    @contextlib.contextmanager
    def watching(self, key: bytes) -> Iterator[Watch]:
        """Watch ``key``'s releases for the block (register before the first attempt, so
        a release between a failed attempt and the wait is not missed)."""
        with self._mutex:
            watch = self._watched.setdefault(key, Watch(threading.Condition(self._mutex)))
            watch.watchers += 1
        try:
            yield watch
        finally:
            with self._mutex:
                watch.watchers -= 1
                if not watch.watchers:
                    del self._watched[key]

    def released(self, key: bytes) -> None:
        """Wake this process's waiters on ``key``: it was just released."""
        with self._mutex:
            watch = self._watched.get(key)
            if watch is not None:
                watch.releases += 1
                watch.changed.notify_all()


LOCAL_RELEASES = LocalReleases()
