"""Server sessions on psycopg's own connection (statements prepared, run by its generators),
sync and asyncio alike. Every wait for an answer is bounded by ``connect_timeout`` but a lock
wait; under eventlet the sync waits are green. docs/postgresql.md"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Generator
from typing import Any, TypeVar

import psycopg
from psycopg import errors, generators, pq, waiting

from conch.backends.postgresql.statements import Statement, Steps, advance


class Bounded:
    """What both sessions add to psycopg's connections: limits, statements and shutdown."""

    io_timeout = 5.0  # the usual limit
    limit: float | None = 5.0  # the longest wait for the answer in progress (None: none)
    prepared: dict[str, bytes]  # statement name by SQL, set on connecting
    pgconn: pq.abc.PGconn

    def exchange(self, statement: Statement) -> Generator[Any, Any, object]:
        """A psycopg generator: ``statement``'s first value (text, or ``None``), or its error;
        the statement is prepared on its first use on this session."""
        pgconn, sql = self.pgconn, statement.sql
        while True:
            if (name := self.prepared.get(sql)) is None:
                pgconn.send_prepare(b"conch_%d" % len(self.prepared), sql.encode())
            else:
                pgconn.send_query_prepared(name, statement.params)
            result = (yield from generators.execute(pgconn))[-1]
            if result.status == pq.ExecStatus.FATAL_ERROR:
                return errors.error_from_result(result)
            if name is not None:
                return result.get_value(0, 0)
            self.prepared[sql] = b"conch_%d" % len(self.prepared)

    def out_of_step(self, exc: psycopg.OperationalError) -> None:
        """Close when a wait failed with no answer (gone, or timed out: out of step)."""
        if exc.sqlstate is None:
            self.pgconn.finish()

    @property
    def waiting_for_lock(self) -> bool:
        return self.limit != self.io_timeout

    def shutdown(self) -> None:
        """End the connection now, from any thread: the server frees the session's locks, a
        statement in flight fails. A duplicate is shut: never a number libpq closed meanwhile."""
        with contextlib.suppress(Exception), socket.socket(
                fileno=os.dup(self.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


class Session(Bounded, psycopg.Connection[tuple[Any, ...]]):
    """One server session; statements run one at a time, :meth:`cancel_safe` from any thread."""

    def outcome(self, steps: Steps[Any]) -> Any:
        """What ``steps`` return, or the exception they (or a statement) raised."""
        statement, result = advance(steps, None)
        while statement is not None:
            self.limit = statement.limit(self.io_timeout)
            try:
                with self.lock:
                    answer = self.wait(self.exchange(statement))
            except BaseException as exc:
                answer = exc
            self.limit = self.io_timeout
            statement, result = advance(steps, answer)
        return result

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        # psycopg's default wait is C code that eventlet's hub cannot interrupt.
        wait = waiting.wait if hasattr(select, "poll") else waiting.wait_select
        if timeout is not None:  # psycopg's own bounded wait (notifies): no answer is no fault
            return wait(gen, self.pgconn.socket, interval=interval, timeout=timeout)
        try:
            return wait(gen, self.pgconn.socket, interval=interval, timeout=self.limit)
        except psycopg.OperationalError as exc:
            self.out_of_step(exc)
            raise

    def end(self) -> None:
        """Close now (from any thread): a statement in flight fails; its thread closes it."""
        if self.lock.acquire(blocking=False):
            self.pgconn.finish()
            self.lock.release()
        else:
            self.shutdown()


class AsyncSession(Bounded, psycopg.AsyncConnection[tuple[Any, ...]]):
    """One server session used by one task at a time on one loop; :meth:`cancel` and
    :meth:`shutdown` may come from any thread."""

    async def outcome(self, steps: Steps[Any]) -> Any:
        """What ``steps`` return, or the exception they (or a statement) raised (a cancelled
        task cancels its statement first)."""
        statement, result = advance(steps, None)
        while statement is not None:
            self.limit = statement.limit(self.io_timeout)
            try:
                async with self.lock:
                    answer = await self.wait(self.exchange(statement))
            except BaseException as exc:
                answer = exc
            self.limit = self.io_timeout
            statement, result = advance(steps, answer)
        return result

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return await super().wait(gen, interval, self.limit if timeout is None else timeout)
        except psycopg.OperationalError as exc:
            self.out_of_step(exc)
            raise

S = TypeVar("S", bound=psycopg.BaseConnection[Any])


def forget_connection(connection: psycopg.BaseConnection[Any]) -> None:
    """In a forked child: close ``connection`` without a word to the parent's server (libpq
    would send its goodbye when the object is collected)."""
    if not connection.closed:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, connection.pgconn.socket)
        os.close(devnull)
        connection.pgconn.finish()


def create_missing(session: Session, statements: dict[str, str]) -> None:
    """Run each ``CREATE`` of ``statements`` (by table or sequence name) whose relation is
    missing; one made meanwhile by another process is no error."""
    for name, create in statements.items():
        if session.execute(f"SELECT to_regclass('{name}')").fetchone() == (None,):
            with contextlib.suppress(errors.UniqueViolation, errors.DuplicateTable):
                session.execute(create, prepare=False)
