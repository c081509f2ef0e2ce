"""Server sessions on psycopg's own connection, and the pool that reuses them (sync and
asyncio alike). Every wait for an answer is bounded by ``connect_timeout`` except a lock
wait; under eventlet the sync waits go through psycopg's ``select`` wait, which is green."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import waiting
from psycopg.errors import LockNotAvailable

from conch.backends.kit.socket_wait import SocketWait
from conch.backends.postgresql.statements import Conversation, Statement, Steps, T


class Session(psycopg.Connection[tuple[Any, ...]]):
    """One server session; statements run one at a time, :meth:`cancel_safe` from any thread."""

    io_timeout = 5.0
    limit: float | None = 5.0  # the longest wait for the answer in progress
    lock_timeout_ms = 0  # the connection's options set lock_timeout=0
    waiting_for_lock = False

    @classmethod
    def open(cls, conninfo: str, io_timeout: float) -> Session:
        """Connect (raises psycopg's errors); every statement is prepared on first use."""
        session = cls.connect(conninfo, autocommit=True, prepare_threshold=0)
        session.io_timeout = session.limit = io_timeout
        return session

    def answer(self, statement: Statement) -> object:
        """``statement``'s first value, or the ``LockNotAvailable`` its lock wait ended with."""
        self.limit, self.waiting_for_lock = statement.limits(self.io_timeout)
        try:
            return first_value(self.execute(statement.sql, statement.params).fetchone())
        except LockNotAvailable as exc:
            return exc
        finally:
            self.limit, self.waiting_for_lock = self.io_timeout, False

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        # psycopg's default wait is C code that eventlet's hub cannot interrupt.
        wait = waiting.wait if hasattr(select, "poll") else waiting.wait_select
        with finished_when_broken(self):
            return wait(gen, self.pgconn.socket, interval=interval,
                        timeout=self.limit if timeout is None else timeout)

    def close_when_idle(self, timeout: float) -> bool:
        """Close once no statement runs; False if one still ran after ``timeout`` seconds."""
        if not self.lock.acquire(timeout=timeout):
            return False
        self.pgconn.finish()
        self.lock.release()
        return True


def run(session: Session, steps: Steps[T]) -> T:
    """Run ``steps`` on ``session`` (psycopg's errors pass through)."""
    talk = Conversation(steps)
    while talk.statement is not None:
        talk.answered(session.answer(talk.statement))
    return talk.result  # type: ignore[return-value]


@contextlib.contextmanager
def finished_when_broken(session: psycopg.BaseConnection[Any]) -> Any:
    """Close ``session`` when a wait fails without an answer: the connection is gone, or out
    of step with the server after a timeout."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if exc.sqlstate is None:
            session.pgconn.finish()
        raise


def first_value(row: tuple[Any, ...] | None) -> object:
    return None if row is None else row[0]


C = TypeVar("C", bound=psycopg.BaseConnection[Any])


class Pool(Generic[C]):
    """Idle sessions, each holding no advisory lock, and the sessions lent out. Thread-safe;
    ``stopped`` makes the error of a borrow after :meth:`close`."""

    def __init__(self, keep_idle: int, stopped: Callable[[], Exception]) -> None:
        self._keep_idle = keep_idle
        self._stopped = stopped
        self._mutex = threading.Lock()
        self.idle: list[C] = []
        self.lent: set[C] = set()
        self.closed = False

    def idle_one(self) -> C | None:
        """A live idle session, lent out, or ``None``."""
        while True:
            with self._mutex:
                if self.closed:
                    raise self._stopped()
                if not self.idle:
                    return None
                session = self.idle.pop()
                self.lent.add(session)
            # An idle session that is readable was sent an error or EOF: it is gone.
            if not session.closed and not SocketWait(session.pgconn.socket).ready():
                return session
            self.give_back(session, keep=False)

    def lend(self, session: C) -> C:
        """Count a new session as lent out (closed if the pool was closed meanwhile)."""
        with self._mutex:
            if not self.closed:
                self.lent.add(session)
                return session
        session.pgconn.finish()
        raise self._stopped()

    def give_back(self, session: C, keep: bool = True) -> None:
        """Return a session: kept idle with ``keep`` (it holds no advisory lock), else closed
        (it may hold one, or is broken: closing frees its locks)."""
        with self._mutex:
            self.lent.discard(session)
            if keep and not self.closed and len(self.idle) < self._keep_idle:
                self.idle.append(session)
                return
        session.pgconn.finish()

    def close(self) -> list[C]:
        """Close the idle sessions; the sessions lent out, for the caller to end."""
        with self._mutex:
            self.closed = True
            idle, self.idle = self.idle, []
        for session in idle:
            session.pgconn.finish()
        return list(self.lent)

    def forget_parent(self) -> None:
        """In a forked child: drop every session without touching the parent's: each socket
        number is pointed at /dev/null first, so closing it sends nothing."""
        self._mutex = threading.Lock()  # another thread of the parent may have held it
        sessions, self.idle, self.lent = [*self.idle, *self.lent], [], set()
        for session in (session for session in sessions if not session.closed):
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, session.pgconn.socket)
            os.close(devnull)
            session.pgconn.finish()
