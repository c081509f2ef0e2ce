"""MySQL / MariaDB user-level locks: conch ``mysql://`` against tooz's mysql driver.

Every contender waits with a timeout (``acquire(blocking=60)``), as the issue measures:
tooz then waits in the server too (``GET_LOCK(name, 60)`` on a connection it opens for
each acquire and closes at release). conch keeps pooled sessions, waits in the server and
draws a fencing token in the same round-trip: an ``INSERT`` that commits, which tooz does
not do. The server flushes InnoDB's log at each commit (``innodb_flush_log_at_trx_commit=1``,
the default), so conch's figures include a durable write per acquire. Two floors on one
long-lived connection: ``GET_LOCK`` and ``RELEASE_LOCK`` alone, and the same with the
token's ``INSERT`` (conch's statement): the least a fenced lock costs here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import CLIENT  # type: ignore[import-untyped]
from tests.servers.mysql import MySQLServer

from benchmarks.contenders import common
from benchmarks.contenders.base import Contender, LockLike, Settings, Target
from conch.backends.mysql.backend import ensure_fencing_table
from conch.backends.mysql.lock import ACQUIRE
from conch.url import parse_url

SETTINGS = Settings()
WAIT_S = 60
"""Every contender's ``acquire(blocking=WAIT_S)``: a timed wait, served by the server."""

# The goals (issue 13), tooz waiting in the server as well.
TARGETS = (
    Target("hand-off p50 ≤ tooz's (both wait in GET_LOCK; conch also commits a token)",
           "handoff p50", "conch", 1.0, peer="tooz"),
    Target("uncontended p50 ≤ 0.8x tooz's (which connects per acquire, draws no token)",
           "uncontended p50", "conch", 0.8, peer="tooz"),
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






class Conch(common.Conch):
    """conch with ``acquire(blocking=WAIT_S)``."""

    def lock(self, name: str) -> LockLike:
        return common.TimedWait(super().lock(name), blocking=WAIT_S)


class Tooz(common.Tooz):
    """tooz with ``acquire(blocking=WAIT_S)``: ``GET_LOCK(name, WAIT_S)`` in the server."""

    def lock(self, name: str) -> LockLike:
        return common.TimedWait(super().lock(name), blocking=WAIT_S)


class _UserLevelLock:
    """``GET_LOCK`` (waiting :data:`WAIT_S`) and ``RELEASE_LOCK`` on one connection."""

    def __init__(self, connection: Any, name: str) -> None:
        self._cursor = connection.cursor()
        self._name = name

    def acquire(self) -> bool:
        self._cursor.execute("SELECT GET_LOCK(%s, %s)", (self._name, WAIT_S))
        return bool(self._cursor.fetchone()[0] == 1)

    def release(self) -> None:
        self._cursor.execute("SELECT RELEASE_LOCK(%s)", (self._name,))
        self._cursor.fetchone()


class _FencedUserLevelLock(_UserLevelLock):
    """As :class:`_UserLevelLock`, drawing the token with conch's own statement."""

    def acquire(self) -> bool:
        self._cursor.execute(ACQUIRE, {"name": self._name, "wait": WAIT_S, "holder": b""})
        self._cursor.nextset()
        return bool(self._cursor.rowcount > 0)


class BareGetLock(Contender):
    """The floor: the server's two calls on a connection kept open, nothing else."""

    name = "bare GET_LOCK"
    floor = True
    fenced = False

    def setup(self) -> None:
        url = parse_url(self.target)
        host, port = url.hosts[0]
        self._connection = pymysql.connect(
            host=host, port=port, user=url.username, password=url.password,
            database=url.path.lstrip("/"), autocommit=True,
            client_flag=CLIENT.MULTI_STATEMENTS,
        )

    def lock(self, name: str) -> LockLike:
        kind = _FencedUserLevelLock if self.fenced else _UserLevelLock
        return kind(self._connection, name)

    def teardown(self) -> None:
        self._connection.close()


class FencedGetLock(BareGetLock):
    """The floor of a fenced lock: ``GET_LOCK`` and the token's committed ``INSERT`` in one
    round-trip (conch's statement, on conch's table), then ``RELEASE_LOCK``."""

    name = "GET_LOCK + token commit"
    fenced = True

    def setup(self) -> None:
        super().setup()
        ensure_fencing_table(self._connection)


CONTENDERS: tuple[type[Contender], ...] = (Conch, Tooz, BareGetLock, FencedGetLock)
