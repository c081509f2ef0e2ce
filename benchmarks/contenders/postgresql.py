"""PostgreSQL advisory locks: conch ``postgresql://`` against tooz's postgresql driver.

tooz keys a lock by 16 bits of the name's MD5 and opens a new connection for
every acquire (closed at release); its blocking acquire waits in
``pg_advisory_lock``. conch keeps pooled sessions, takes the lock and draws a
fencing token in one round-trip, and waits in the server too. The floor is the
bare primitive: prepared ``pg_advisory_lock`` / ``pg_advisory_unlock`` on one
long-lived connection through libpq, no token, no checks.

The server keeps ``fsync`` on (unlike the tests'), as in production: conch's
fencing sequence writes WAL every 32 tokens, the peers write nothing. The role
logs in with ``scram-sha-256`` (PostgreSQL's default for passwords), which tooz
pays on every acquire; with ``trust`` its acquire+release costs about 3 ms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import pq
from psycopg.conninfo import make_conninfo
from tests.servers.postgresql import PostgreSQLServer

from benchmarks.contenders.base import Contender, LockLike, Target
from benchmarks.contenders.common import Conch, Tooz
from conch.url import parse_url

# The goal: tooz costs about 2 ms (a connection per lock).
TARGETS = (
    Target("uncontended p50 < 200 µs (tooz: ~2 ms, a new connection per acquire)",
           "uncontended p50", "conch", 200.0),
)


@contextmanager
def target() -> Iterator[str]:
    """A PostgreSQL server of the test harness for the run, stopped by PID afterwards."""
    server = PostgreSQLServer(durable=True)
    try:
        server.initialise()
        yield server.url
    finally:
        server.cleanup()






class _AdvisoryLock:
    """Prepared ``pg_advisory_lock(key)`` and ``pg_advisory_unlock(key)`` on one connection."""

    def __init__(self, connection: pq.abc.PGconn, name: str) -> None:
        self._connection = connection
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self._key = [str(key).encode()]

    def acquire(self) -> bool:
        result = self._connection.exec_prepared(b"lock", self._key)
        return result.status == pq.ExecStatus.TUPLES_OK

    def release(self) -> None:
        self._connection.exec_prepared(b"unlock", self._key)


class BareAdvisoryLock(Contender):
    """The floor: the server's two calls, prepared, on a connection kept open."""

    name = "bare pg_advisory_lock"
    distribution = "psycopg"
    floor = True

    def setup(self) -> None:
        url = parse_url(self.target)
        host, port = url.hosts[0]
        self._connection = pq.PGconn.connect(make_conninfo(
            "", host=host, port=port, dbname=url.path.lstrip("/"),
            user=url.username, password=url.password,
        ).encode())
        self._connection.prepare(b"lock", b"SELECT pg_advisory_lock($1::bigint)")
        self._connection.prepare(b"unlock", b"SELECT pg_advisory_unlock($1::bigint)")

    def lock(self, name: str) -> LockLike:
        return _AdvisoryLock(self._connection, name)

    def teardown(self) -> None:
        self._connection.finish()


CONTENDERS: tuple[type[Contender], ...] = (Conch, Tooz, BareAdvisoryLock)
