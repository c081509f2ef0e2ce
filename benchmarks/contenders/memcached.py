"""memcached TTL locks: conch ``memcached://`` against tooz's memcached driver.

Both take a lock with ``add`` (stored only when the key is absent). tooz's
blocking acquire retries it once a second and releases with a plain ``delete``
(which may delete another holder's lock). conch draws a fencing token with
``incr``, releases with a compare-and-delete (``gets`` + meta ``md C<cas>``),
and its waiters poll with a back-off capped at 5 ms; its calls go
through pymemcache's ``PooledClient``. The floor is the bare
primitive: ``add`` and ``delete`` on one connection, retrying ``add`` every
millisecond, with no token, no ownership check, no renewal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pymemcache.client.base import Client  # type: ignore[import-untyped]
from tests.servers.memcached import start_memcached

from benchmarks.contenders.base import Contender, LockLike, Settings, Target
from benchmarks.contenders.common import Conch, Tooz
from conch.backends.memcached.client import lock_keys
from conch.url import parse_url

# tooz's hand-offs take about a second each (its poll): fewer rounds keep the run short.
SETTINGS = Settings(handoff_rounds=100)

# Issue 13's row for memcached, checked on figures of the same run (Jain's index ≥ 0.95
# is read off the contended table).
TARGETS = (
    Target("hand-off p50 ≤ 5 ms", "handoff p50", "conch", 5_000.0),
    Target("uncontended p50 ≤ tooz's", "uncontended p50", "conch", 1.0, peer="tooz"),
    *(Target(f"contended throughput ≥ tooz's ({count} processes)", f"throughput {count}",
             "conch", 1.0, higher_is_better=True, peer="tooz")
      for count in SETTINGS.process_counts),
)


@contextmanager
def target() -> Iterator[str]:
    """A memcached server of the test harness for the run, stopped by PID afterwards."""
    server = start_memcached()
    try:
        yield server.url
    finally:
        server.cleanup()


class _AddDeleteLock:
    """``add`` until stored (every millisecond), then ``delete``."""

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self._key = lock_keys(name.encode()).holder + b":bare"

    def acquire(self) -> bool:
        while not self._client.add(self._key, b"1", expire=30):
            time.sleep(0.001)
        return True

    def release(self) -> None:
        self._client.delete(self._key)


class BareAddDelete(Contender):
    """The floor: the server's two calls on a connection kept open."""

    name = "bare add/delete"
    distribution = "pymemcache"
    floor = True

    def setup(self) -> None:
        host, port = parse_url(self.target).hosts[0]
        self._client = Client((host, port), no_delay=True, default_noreply=False)

    def lock(self, name: str) -> LockLike:
        return _AddDeleteLock(self._client, name)

    def teardown(self) -> None:
        self._client.close()


CONTENDERS: tuple[type[Contender], ...] = (Conch, Tooz, BareAddDelete)
