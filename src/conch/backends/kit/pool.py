"""The SQL backends' connections, idle and lent out; thread- and fork-safe (docs/kit.md, "Pool")."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from conch.backends.kit.fork import forget_in_child

C = TypeVar("C")


class Pool(Generic[C]):
    """At most ``keep_idle`` idle connections, the most recently used lent first; one not
    ``usable`` (given the seconds it was idle) is ``end``-ed instead. Once closed, lending
    raises ``stopped()``. In a forked child every connection goes through ``forget``."""

    def __init__(self, end: Callable[[C], None], forget: Callable[[C], None], keep_idle: int,
                 stopped: Callable[[], Exception], usable: Callable[[C, float], bool]) -> None:
        self._end, self._forget, self._keep_idle = end, forget, keep_idle
        self.stopped, self._usable = stopped, usable
        self._mutex = threading.Lock()
        self._idle: list[tuple[C, float]] = []  # with the time each was given back
        self.lent: set[C] = set()
        self.closed = False
        forget_in_child(self)

    def idle_one(self) -> C | None:
        """A usable idle connection, now lent out, or ``None``."""
        while True:
            with self._mutex:
                if self.closed:
                    raise self.stopped()
                if not self._idle:
                    return None
                connection, since = self._idle.pop()
                self.lent.add(connection)
            if self._usable(connection, time.monotonic() - since):
                return connection
            self.give_back(connection, keep=False)

    def lend(self, connection: C) -> C:
        """Count a new ``connection`` as lent out (ended, and ``stopped()`` raised, once closed)."""
        with self._mutex:
            if not self.closed:
                self.lent.add(connection)
                return connection
        self._end(connection)
        raise self.stopped()

    def give_back(self, connection: C, keep: bool = True) -> None:
        """Keep ``connection`` idle, or end it (``keep=False``: it may hold a lock, or failed)."""
        with self._mutex:
            self.lent.discard(connection)
            if keep and not self.closed and len(self._idle) < self._keep_idle:
                self._idle.append((connection, time.monotonic()))
                return
        self._end(connection)

    def end_idle(self, older_than: float = 0.0) -> None:
        """End the connections idle for ``older_than`` seconds or more (0: all)."""
        since = time.monotonic() - older_than
        with self._mutex:
            stale = [item for item in self._idle if not older_than or item[1] <= since]
            self._idle = [item for item in self._idle if item not in stale]
        for connection, _ in stale:
            self._end(connection)

    def close(self) -> list[C]:
        """End the idle connections and lend no more; the ones lent out, for the caller."""
        with self._mutex:
            self.closed = True
        self.end_idle()
        with self._mutex:
            return list(self.lent)

    def forget_parent(self) -> None:
        """In a forked child: drop every connection, idle or lent, through ``forget``."""
        self._mutex = threading.Lock()  # another thread of the parent may have held it
        connections = [*(connection for connection, _ in self._idle), *self.lent]
        self._idle, self.lent = [], set()
        for connection in connections:
            self._forget(connection)
