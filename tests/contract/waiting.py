"""Waiting on another thread, and the time bounds the contract allows.

Bounds are generous because the test machines are loaded; each says which
broken behaviour it still catches.
"""

from __future__ import annotations

import threading
import time

import conch
from conch.lock import Blocking
from conch.url import parse_url

HANDOFF_WITH_NOTIFY = 1.0
"""Seconds from release to the waiter's return when the backend wakes waiters."""

FAST_HANDOFF = 0.5
"""The best of several hand-offs of a notifying backend stays below this: a waiter that
polls once a second returns about 0.8 s after a release 0.2 s into its wait."""

HANDOFF_WHEN_POLLING = 2.5
"""Seconds from release to the waiter's return for a backend that polls (``notify`` False)
with a back-off capped well below a second."""

SESSION_END = 6.0
"""Seconds within which a ``session_bound`` backend frees the locks of a dead holder."""

LEASE_MARGIN = 5.0
"""Seconds beyond the lease a backend without ``session_bound`` may take to free them."""

DEFAULT_LEASE = 30.0
"""The lease assumed when the URL sets none with ``?ttl=`` (or ZooKeeper's ``?timeout=``)."""


def handoff_bound(capabilities: conch.Capabilities) -> float:
    """Seconds within which a waiter must return once the holder released."""
    return HANDOFF_WITH_NOTIFY if capabilities.notify else HANDOFF_WHEN_POLLING


def dead_holder_bound(coordinator: conch.Coordinator) -> float:
    """Seconds within which the locks of a killed holder must be free again.

    A backend without ``session_bound`` frees them when their lease runs out; the
    suite reads the lease from the URL option ``ttl`` (or ``timeout``, the session
    timeout of zookeeper://), in seconds, which server fixtures set short.
    """
    if coordinator.capabilities.session_bound:
        return SESSION_END
    query = parse_url(coordinator.url).query
    lease = query.get("ttl") or query.get("timeout")
    return (float(lease) if lease else DEFAULT_LEASE) + LEASE_MARGIN


class Waiter:
    """``lock.acquire(blocking)`` on a daemon thread, noting the outcome and when it returned."""

    def __init__(self, lock: conch.Lock | conch.Semaphore, blocking: Blocking = True) -> None:
        self.lock = lock
        self.acquired: bool | None = None
        self.error: BaseException | None = None
        self.returned_at = float("nan")
        self._thread = threading.Thread(target=self._run, args=(blocking,), daemon=True)
        self._thread.start()

    def _run(self, blocking: Blocking) -> None:
        try:
            self.acquired = self.lock.acquire(blocking)
        except BaseException as exc:
            self.error = exc
        finally:
            self.returned_at = time.monotonic()

    @property
    def waiting(self) -> bool:
        """True while ``acquire`` has not returned."""
        return self._thread.is_alive()

    def result(self, timeout: float) -> bool:
        """What ``acquire`` returned (re-raising its error); fails if still waiting after
        ``timeout`` seconds."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"acquire still waiting after {timeout} s"
        if self.error is not None:
            raise self.error
        assert self.acquired is not None
        return self.acquired
