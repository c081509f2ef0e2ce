"""MySQL / MariaDB user-level locks: conch ``mysql://`` against tooz's mysql driver.

tooz takes ``GET_LOCK(name, 0)`` on a connection it opens for each acquire and
closes at release; a blocking acquire retries it once a second (tenacity,
``wait_exponential(max=1)``). conch keeps pooled sessions, waits in the server
(``GET_LOCK`` with the time left: a release wakes it) and draws a fencing token
in the same round-trip. The floor is the bare primitive: ``GET_LOCK`` and
``RELEASE_LOCK`` on one long-lived connection, no token, no checks. The server
flushes InnoDB's log at each commit (``innodb_flush_log_at_trx_commit=1``, the
default), so conch's figures include a durable write per acquire.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql  # type: ignore[import-untyped]
from tests.servers.mysql import MySQLServer

from benchmarks.contenders.base import Contender, LockLike, Settings, Target
from benchmarks.contenders.common import Conch, Tooz
from conch.url import parse_url

# tooz's hand-offs take up to a second each: fewer rounds keep a run near three minutes.
SETTINGS = Settings(handoff_rounds=100)

# The goals: reuse sessions, wait in the server (tooz polls once a second).
TARGETS = (
    Target("uncontended p50 ≤ tooz's (which connects per acquire but draws no token)",
           "uncontended p50", "conch", 1.0, peer="tooz"),
    Target("hand-off p50 < 5 ms (the server wakes the waiter; tooz polls once a second)",
           "handoff p50", "conch", 5_000.0),
    *(Target(f"contended throughput ≥ tooz's ({count} processes)", f"throughput {count}",
             "conch", 1.0, higher_is_better=True, peer="tooz")
      for count in SETTINGS.process_counts),
)


@contextmanager
def target() -> Iterator[str]:
    """A MariaDB server of the test harness for the run, stopped by PID afterwards."""
    server = MySQLServer(durable=True)  # each conch acquire commits its token
    # tooz does not percent-decode the URL's password: give it a URL-safe one.
    server.password = f"bench-{uuid.uuid4().hex}"
    try:
        server.initialise()
        yield server.url
    finally:
        server.cleanup()






class _UserLevelLock:
    """``GET_LOCK`` (waiting a year) and ``RELEASE_LOCK`` on one connection."""

    def __init__(self, connection: Any, name: str) -> None:
        self._cursor = connection.cursor()
        self._name = name

    def acquire(self) -> bool:
        self._cursor.execute("SELECT GET_LOCK(%s, 31536000)", (self._name,))
        return bool(self._cursor.fetchone()[0] == 1)

    def release(self) -> None:
        self._cursor.execute("SELECT RELEASE_LOCK(%s)", (self._name,))
        self._cursor.fetchone()


class BareGetLock(Contender):
    """The floor: the server's two calls on a connection kept open, nothing else."""

    name = "bare GET_LOCK"
    floor = True

    def setup(self) -> None:
        url = parse_url(self.target)
        host, port = url.hosts[0]
        self._connection = pymysql.connect(
            host=host, port=port, user=url.username, password=url.password,
            database=url.path.lstrip("/"), autocommit=True,
        )

    def lock(self, name: str) -> LockLike:
        return _UserLevelLock(self._connection, name)

    def teardown(self) -> None:
        self._connection.close()


CONTENDERS: tuple[type[Contender], ...] = (Conch, Tooz, BareGetLock)
