"""PostgreSQL advisory locks: conch ``postgresql://`` against tooz's postgresql driver and
psycopg by hand.

tooz keys a lock by 16 bits of the name's MD5 and opens a new connection for
every acquire (closed at release); its blocking acquire waits in
``pg_advisory_lock``. conch keeps pooled sessions, takes the lock and draws a
fencing token in one round-trip, and waits in the server too. "psycopg by hand"
is what an application would write: ``pg_advisory_lock`` / ``pg_advisory_unlock``
through one autocommit ``psycopg.Connection``, no token, no checks; "psycopg by hand +
token" draws a fencing token as conch does (``nextval`` of conch's sequence, after the
grant, in the locking statement), to show what the token costs the server. The floor is
the bare primitive: the same two calls, prepared, through libpq itself.

The server keeps ``fsync`` on (unlike the tests'), as in production: conch's
fencing sequence writes WAL every 32 tokens, the peers write nothing. The role
logs in with ``scram-sha-256`` (PostgreSQL's default for passwords), which tooz
pays on every acquire; with ``trust`` its acquire+release costs about 3 ms.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo
from tests.servers.postgresql import PostgreSQLServer

from benchmarks.contenders.base import Contender, LockLike, Target
from benchmarks.contenders.common import Conch, Tooz
from conch.backends.kit.naming import int64_key
from conch.backends.postgresql.statements import FENCING_SEQUENCE, SETUP
from conch.url import parse_url

HAND = "psycopg by hand"
# Issue 13's goals for postgresql.
TARGETS = (
    Target("hand-off p50 ≤ psycopg by hand (pg_advisory_lock)", "handoff p50", "conch", 1.0,
           peer=HAND),
    Target("uncontended p50 ≤ 1.2x psycopg by hand", "uncontended p50", "conch", 1.2, peer=HAND),
    *(Target(f"contended throughput ≥ tooz's ({count} processes)", f"throughput {count}",
             "conch", 1.0, higher_is_better=True, peer="tooz") for count in (2, 4, 8)),
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




class _PsycopgLock:
    """``pg_advisory_lock(key)`` and ``pg_advisory_unlock(key)`` through psycopg."""

    def __init__(self, connection: psycopg.Connection[tuple[object, ...]], name: str) -> None:
        self._connection = connection
        self._key = (int64_key(name.encode()),)

    def acquire(self) -> bool:
        self._connection.execute("SELECT pg_advisory_lock(%s)", self._key)
        return True

    def release(self) -> None:
        self._connection.execute("SELECT pg_advisory_unlock(%s)", self._key)


class _TokenLock(_PsycopgLock):
    """The same, drawing a fencing token once the lock is granted."""

    def acquire(self) -> bool:
        self._connection.execute(f"SELECT nextval('{FENCING_SEQUENCE}') FROM pg_advisory_lock(%s)",
                                 self._key)
        return True


class PsycopgByHand(Contender):
    """What an application writes with psycopg: one autocommit connection, the two calls."""

    name = HAND
    distribution = "psycopg"

    def setup(self) -> None:
        self._connection = psycopg.Connection.connect(self.target, autocommit=True)

    def lock(self, name: str) -> LockLike:
        return _PsycopgLock(self._connection, name)

    def teardown(self) -> None:
        self._connection.close()


class PsycopgByHandWithToken(PsycopgByHand):
    """psycopg by hand, with a fencing token from conch's sequence."""

    name = f"{HAND} + token"

    def setup(self) -> None:
        super().setup()
        self._connection.execute(SETUP[FENCING_SEQUENCE])

    def lock(self, name: str) -> LockLike:
        return _TokenLock(self._connection, name)


class _AdvisoryLock:
    """Prepared ``pg_advisory_lock(key)`` and ``pg_advisory_unlock(key)`` on one connection."""

    def __init__(self, connection: pq.abc.PGconn, name: str) -> None:
        self._connection = connection
        self._key = [str(int64_key(name.encode())).encode()]

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


CONTENDERS: tuple[type[Contender], ...] = (
    Conch, Tooz, PsycopgByHand, PsycopgByHandWithToken, BareAdvisoryLock)
