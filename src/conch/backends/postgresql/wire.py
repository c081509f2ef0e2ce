"""libpq's conversation with a PostgreSQL server as *steps* that never wait: connecting,
one request and its result; and, without a round-trip, an idle connection's liveness
and how a forked child lets go of its parent's connections.

Steps are generators (psycopg's own sans-I/O design): each yields a :class:`Wait` (this
socket must become readable, or writable, before ``end``) and goes on when sent
``None``. The driver waits as it can: :class:`~conch.backends.postgresql.session.Session`
on the caller's thread (:mod:`conch.backends.kit.socket_wait`),
:class:`~conch.backends.postgresql.async_session.AsyncSession` on the event loop. A driver
whose ``end`` passes throws :class:`Expired` into the steps, which close the connection:
the protocol is out of step once a request goes unanswered. The statements conch sends
this way are :mod:`conch.backends.postgresql.protocol`'s.

Errors come out as two exceptions, translated by the backend: :class:`SessionBroken`
(the connection is gone or did not answer in time; the server frees the session's
advisory locks when it notices) and :class:`StatementFailed` (the server refused a
statement; the session still works).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from typing import NamedTuple, TypeVar

from psycopg import pq

from conch.backends.kit.socket_wait import SocketWait

T = TypeVar("T")


class SessionBroken(Exception):
    """The connection failed or did not answer in time; it is closed."""


class StatementFailed(Exception):
    """The server refused a statement (``sqlstate`` says why); the session still works."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{message} (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate


class Expired(Exception):
    """Thrown into steps by their driver: the wait's ``end`` passed."""


class Wait(NamedTuple):
    """What steps wait for: socket ``fd`` readable (or ``writing``: writable) by ``end``
    (monotonic; ``None``: no limit). ``server_wait``: the server is waiting for a lock."""

    fd: int
    writing: bool
    end: float | None
    server_wait: bool = False


Steps = Generator[Wait, None, T]


def connecting(conninfo: bytes, timeout: float) -> Steps[pq.abc.PGconn]:
    """libpq's non-blocking connect (handshake and authentication) within ``timeout``."""
    pg = pq.PGconn.connect_start(conninfo)
    end = time.monotonic() + timeout
    status: int = pq.PollingStatus.WRITING
    try:
        while status != pq.PollingStatus.OK:
            if status == pq.PollingStatus.FAILED:
                raise SessionBroken(pg.get_error_message())
            # Read the socket each time: it may change between attempts (addresses, SSL).
            yield Wait(pg.socket, status != pq.PollingStatus.READING, end)
            status = pg.connect_poll()
    except Expired:
        pg.finish()
        raise SessionBroken(f"timeout expired: no answer within {timeout:.3g} s") from None
    except BaseException:
        pg.finish()
        raise
    return pg


def exchange(pg: pq.abc.PGconn, send: Callable[[], None], timeout: float | None,
             server_wait: bool = False) -> Steps[pq.abc.PGresult]:
    """Send one request and collect its result, within ``timeout`` seconds (``None``: no
    limit). Interrupted (or abandoned), the steps close the connection."""
    if pg.status != pq.ConnStatus.OK:
        raise SessionBroken("the connection was closed")
    end = None if timeout is None else time.monotonic() + timeout
    try:
        send()
        while pg.flush():  # a non-blocking connection whose request is not all sent yet
            yield Wait(pg.socket, True, end, server_wait)
        while pg.is_busy():
            yield Wait(pg.socket, False, end, server_wait)
            pg.consume_input()
        result = pg.get_result()
        while pg.get_result() is not None:
            pass
    except Expired:
        pg.finish()  # the server frees our locks once it sees the close
        raise SessionBroken(f"no answer from the server within {timeout:.3g} s") from None
    except Exception as exc:
        pg.finish()
        raise SessionBroken(str(exc).strip()) from None
    except BaseException:  # interrupted mid-statement: the protocol is out of step
        pg.finish()
        raise
    if result is None:
        pg.finish()
        raise SessionBroken("the server closed the connection")
    if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return result
    if pg.status != pq.ConnStatus.OK:
        pg.finish()
        raise SessionBroken(pg.get_error_message() or "the connection was lost")
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) or b"?????"
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"error"
    raise StatementFailed(sqlstate.decode(), message.decode(errors="replace"))


def cancelling(canceller: pq.abc.PGcancelConn, end: float | None) -> Steps[None]:
    """libpq 17's non-blocking cancel request, already started (``canceller.start()``),
    until it is sent or ``end`` passes; frees ``canceller`` either way."""
    try:
        while (status := canceller.poll()) not in (pq.PollingStatus.OK,
                                                   pq.PollingStatus.FAILED):
            yield Wait(canceller.socket, status == pq.PollingStatus.WRITING, end)
    finally:
        canceller.finish()


def idle_alive(pg: pq.abc.PGconn, readable: SocketWait) -> bool:
    """False once an idle connection is known to be gone (checked without a round-trip;
    ``readable`` waits for input on its socket)."""
    if pg.status != pq.ConnStatus.OK:
        return False
    if readable.ready():
        try:  # an idle session that is readable was sent an error or EOF
            pg.consume_input()
        except Exception:
            pg.finish()
    return pg.status == pq.ConnStatus.OK


def disown(pg: pq.abc.PGconn) -> None:
    """Forget a connection in a forked child without touching the parent's session: the
    socket number is pointed at /dev/null first, so closing writes nothing to it."""
    if pg.status != pq.ConnStatus.OK:
        return  # already closed: its socket number may belong to another file now
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(devnull, pg.socket)
    finally:
        os.close(devnull)
    pg.finish()
