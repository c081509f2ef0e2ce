"""The MySQL connections of one coordinator: settings, opening, pooling, error text.

Every connection is one server session, and a ``GET_LOCK`` lock belongs to the
session that took it. The pool hands a connection to one lock handle at a time
and only takes it back once that handle has released its lock, so an idle
connection never holds a lock (see :mod:`conch.backends.mysql.backend`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from typing import Any

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import CLIENT, CR, ER  # type: ignore[import-untyped]

from conch.backends.kit.tls import SSL_URL_OPTIONS, TLSFileError, TLSFiles, from_ssl_options
from conch.backends.kit.tls_diagnosis import explain
from conch.errors import InvalidURL
from conch.url import BackendURL

Connection = Any
"""A ``pymysql.connections.Connection`` (PyMySQL ships no type hints)."""

DEFAULT_PORT = 3306
IDLE_CONNECTIONS_KEPT = 8

# Errors that mean the session is gone (or unusable): its locks are freed by the
# server once it notices, and the connection must not be used again.
# 1927 is MariaDB's ER_CONNECTION_KILLED (``KILL``), absent from PyMySQL's list.
_SESSION_GONE = frozenset({CR.CR_SERVER_GONE_ERROR, CR.CR_SERVER_LOST, CR.CR_CONN_HOST_ERROR,
                           ER.SERVER_SHUTDOWN, 1927})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and how to connect, from a ``mysql://user:password@host:port/database`` URL.

    ``session_timeout`` (seconds) drives the session: the server ends a session
    it has not heard from for that long (``wait_timeout``), freeing its locks;
    the holder checks each held session every quarter of it and gives up on a
    reply after half of it, so it notices a dead link before the server frees
    its locks. ``tls``: the ``ssl_*`` options
    (:func:`conch.backends.kit.tls.from_ssl_options`): any of them turns TLS on, checking the
    server's certificate and host name unless told otherwise; ``ssl_cert`` and ``ssl_key``
    give a client certificate. ``unix_socket`` (a path)
    replaces the host and port.
    """

    host: str
    port: int
    user: str | None
    password: str | None = dataclasses.field(repr=False)
    database: str
    connect_timeout: float
    session_timeout: float
    tls: TLSFiles | None = None
    plain: bool = False
    """``ssl=false``: no TLS even where the server offers it."""
    unix_socket: str | None = None

    @classmethod
    def from_url(cls, url: BackendURL) -> Settings:
        """Check ``url`` (raise :class:`conch.InvalidURL`) and take its settings."""
        options = url.options({"connect_timeout", "session_timeout", "unix_socket",
                               *SSL_URL_OPTIONS})
        unix_socket = options.get("unix_socket")
        hosts = url.hosts or ((("localhost", None),) if unix_socket else ())
        if len(hosts) != 1 or not hosts[0][0]:
            raise InvalidURL(f"mysql:// URLs need one host, as mysql://user:password@host:port"
                             f"/database, or a unix_socket option: {url}")
        database = url.path.removeprefix("/")
        if not database or "/" in database:
            raise InvalidURL(f"mysql:// URLs need a database name as their path, as "
                             f"mysql://user:password@host:port/database: {url}")
        host, port = hosts[0]
        return cls(
            host=host,
            port=port or DEFAULT_PORT,
            user=url.username,
            password=url.password,
            database=database,
            connect_timeout=url.float_option("connect_timeout", 5.0),
            session_timeout=url.float_option("session_timeout", 10.0),
            tls=from_ssl_options(url),
            plain=not url.bool_option("ssl", True),
            unix_socket=unix_socket,
        )

    @property
    def server(self) -> str:
        """Where the server is, for messages: ``host:port`` or the socket's path."""
        return self.unix_socket or f"{self.host}:{self.port}"

    @property
    def check_interval(self) -> float:
        """Seconds between two checks of a held session."""
        return self.session_timeout / 4

    @property
    def io_timeout(self) -> float:
        """Seconds to wait for any reply of the server."""
        return self.session_timeout / 2

    @property
    def longest_server_wait(self) -> float:
        """The longest ``GET_LOCK`` wait, so that its reply comes within :attr:`io_timeout`."""
        return self.session_timeout / 4


def open_connection(settings: Settings) -> Connection:
    """A new session (autocommit, multi-statements, ``wait_timeout`` = the session timeout).

    The TLS files are read for each new session (so renewed certificates are used), and a
    context, not PyMySQL's ``ssl_*`` arguments, says how to check the server: those check
    neither the certificate nor the host name unless told, and read no CA directory.
    Without ``ssl_*`` options PyMySQL uses TLS if the server offers it, checking nothing
    (``ssl=false``: never).
    """
    return pymysql.connect(
        host=settings.host,
        port=settings.port,
        unix_socket=settings.unix_socket,
        user=settings.user,
        password=settings.password or "",
        database=settings.database,
        connect_timeout=settings.connect_timeout,
        # Bounds the handshake too, so a server that accepts but never answers fails fast.
        read_timeout=settings.io_timeout,
        write_timeout=settings.io_timeout,
        autocommit=True,
        client_flag=CLIENT.MULTI_STATEMENTS,
        init_command=f"SET SESSION wait_timeout = {max(1, math.ceil(settings.session_timeout))}",
        ssl=settings.tls.context() if settings.tls is not None else None,
        ssl_disabled=settings.plain,
    )


def close_quietly(connection: Connection) -> None:
    """Close ``connection``, ending its session (the server frees its locks). Never raises."""
    # Already closed or broken: nothing is left to free.
    with contextlib.suppress(Exception):
        connection.close()


def session_gone(exc: BaseException) -> bool:
    """True when ``exc`` means the connection's session ended or cannot be reached."""
    return isinstance(exc, pymysql.OperationalError) and bool(exc.args) \
        and exc.args[0] in _SESSION_GONE


def timed_out(exc: BaseException) -> bool:
    """True when ``exc`` is a reply that did not come within the I/O timeout."""
    # PyMySQL raises OperationalError(CR_SERVER_LOST) inside its `except OSError`,
    # so the socket timeout stays attached as the implicit context.
    return session_gone(exc) and isinstance(exc.__context__, TimeoutError)


def describe(exc: BaseException, settings: Settings) -> str:
    """What went wrong, for an error message: never the password."""
    code = exc.args[0] if isinstance(exc, pymysql.Error) and exc.args else None
    message = str(exc.args[1]) if isinstance(exc, pymysql.Error) and len(exc.args) > 1 \
        else f"{type(exc).__name__}: {exc}"
    where = settings.server
    tls_problem = explain(exc)
    if isinstance(exc, TLSFileError):
        text = str(exc)
    elif tls_problem is not None:
        text = f"{where}: {tls_problem}"
    elif code == CR.CR_SSL_CONNECTION_ERROR:
        text = (f"{where}: the server does not offer TLS (it has no certificate): configure "
                f"it, or remove the ssl_* options")
    elif code == ER.ACCESS_DENIED_ERROR:
        missing = "" if settings.tls is not None and settings.tls.cert else (
            "; or the user was created REQUIRE SSL, X509 or ISSUER: it needs TLS or a client "
            "certificate, see the ssl_* options")
        text = f"access denied for user {settings.user!r} at {where} (wrong user or password" \
               f"{missing})"
    elif code in (ER.DBACCESS_DENIED_ERROR, ER.BAD_DB_ERROR):
        text = f"database {settings.database!r} at {where} does not exist or is not allowed"
    elif timed_out(exc) or isinstance(exc, TimeoutError):
        text = f"no reply from {where} within {settings.io_timeout:g} s"
    elif code == CR.CR_CONN_HOST_ERROR:
        # PyMySQL keeps the socket's error, which says it without repeating the host.
        cause = getattr(exc, "original_exception", None)
        reason = (cause.strerror or str(cause)) if isinstance(cause, OSError) else message
        text = f"cannot connect to {where}: {reason}"
    else:
        text = message
    if settings.password:
        text = text.replace(settings.password, "***")
    return text


class ConnectionPool:
    """Idle sessions of one coordinator, most recently used first. Thread-safe.

    A connection is either idle here or taken by one lock handle; idle ones the
    server may soon end for inactivity (``wait_timeout``) are closed instead of
    reused.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Half the session timeout: the server ends a session idle for the whole of it.
        self._max_idle_age = settings.session_timeout / 2
        self._mutex = threading.Lock()
        self._idle: list[tuple[Connection, float]] = []

    def take(self) -> Connection:
        """A session for one handle: the most recently used idle one, else a new one."""
        with self._mutex:
            while self._idle:
                connection, idle_since = self._idle.pop()
                if time.monotonic() - idle_since < self._max_idle_age:
                    return connection
                close_quietly(connection)
        return open_connection(self._settings)

    def give_back(self, connection: Connection) -> None:
        """Return a session that holds no lock."""
        with self._mutex:
            if len(self._idle) < IDLE_CONNECTIONS_KEPT:
                self._idle.append((connection, time.monotonic()))
                return
        close_quietly(connection)

    def close_stale(self) -> None:
        """Close the idle sessions the server may soon end (called by the session check)."""
        oldest = time.monotonic() - self._max_idle_age
        with self._mutex:
            stale = [item for item in self._idle if item[1] < oldest]
            self._idle = [item for item in self._idle if item[1] >= oldest]
        for connection, _ in stale:
            close_quietly(connection)

    def close_all(self) -> None:
        """Close every idle session (the server is gone, or the coordinator stops)."""
        with self._mutex:
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            close_quietly(connection)

    def forget_all(self) -> None:
        """In a forked child: drop the parent's sessions without closing them.

        The child shares their sockets; closing one would send the server a QUIT
        and end the parent's session.
        """
        self._mutex = threading.Lock()  # the parent may have held it while forking
        self._idle = []
