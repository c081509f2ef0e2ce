"""How a ``memcached://`` waiter waits: memcached cannot notify, so it polls, briefly.

* A release in this process wakes this process's waiters on that lock at once
  (:data:`LOCAL_RELEASES`, one condition per lock key, shared by every
  coordinator of the process).
* Waiters in other processes poll with :class:`Backoff`: from 1 ms, doubling,
  capped at 10 ms, each pause drawn at random from its upper half so that
  waiters do not poll in step. The cap keeps a cross-process hand-off to a
  few milliseconds (tooz's driver sleeps a fixed second); at one ``add`` every
  5-10 ms per waiter the server barely notices.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator

FIRST_PAUSE = 0.001
MAX_PAUSE = 0.010


class Backoff:
    """The pauses between one waiter's attempts."""

    def __init__(self) -> None:
        self._ceiling = FIRST_PAUSE

    def next_pause(self) -> float:
        """Seconds to wait before the next attempt."""
        pause = random.uniform(self._ceiling / 2, self._ceiling)
        self._ceiling = min(self._ceiling * 2, MAX_PAUSE)
        return pause


class _Watched:
    """The releases of one key seen in this process, while someone waits for it."""

    def __init__(self, mutex: threading.Lock) -> None:
        self.releases = 0
        self.watchers = 0
        self.changed = threading.Condition(mutex)


class Watch:
    """One waiter's view of a key's local releases (from :meth:`LocalReleases.watching`)."""

    def __init__(self, watched: _Watched) -> None:
        self._watched = watched

    @property
    def releases(self) -> int:
        """How many releases of the key this process made so far (compare, do not count)."""
        return self._watched.releases

    def wait(self, seen: int, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or less if a release came after ``releases`` was ``seen``."""
        watched = self._watched
        with watched.changed:
            watched.changed.wait_for(lambda: watched.releases != seen, timeout)


class LocalReleases:
    """Per lock key, the releases made in this process, for waiters in this process."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._watched: dict[bytes, _Watched] = {}

    @contextlib.contextmanager
    def watching(self, key: bytes) -> Iterator[Watch]:
        """Watch ``key``'s releases for the block (register before the first attempt, so
        a release between a failed attempt and the wait is not missed)."""
        with self._mutex:
            watched = self._watched.get(key)
            if watched is None:
                watched = self._watched[key] = _Watched(self._mutex)
            watched.watchers += 1
        try:
            yield Watch(watched)
        finally:
            with self._mutex:
                watched.watchers -= 1
                if not watched.watchers:
                    del self._watched[key]

    def released(self, key: bytes) -> None:
        """Wake this process's waiters on ``key``: it was just released."""
        with self._mutex:
            watched = self._watched.get(key)
            if watched is not None:
                watched.releases += 1
                watched.changed.notify_all()

    def _forget_in_child(self) -> None:
        # A forked child has none of its parent's waiting threads (and maybe a held mutex).
        self._mutex = threading.Lock()
        self._watched = {}


LOCAL_RELEASES = LocalReleases()
os.register_at_fork(after_in_child=LOCAL_RELEASES._forget_in_child)
