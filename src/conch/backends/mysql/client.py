"""A ``mysql://`` URL's connection settings, opening a session with them, and PyMySQL's errors
described for users (never the password). Options: docs/mysql.md."""

from __future__ import annotations

import contextlib
import dataclasses
import math
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


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and how to connect; ``session_timeout``: docs/mysql.md."""

    host: str
    port: int
    user: str | None
    password: str | None = dataclasses.field(repr=False)
    database: str
    connect_timeout: float
    session_timeout: float
    tls: TLSFiles | None = None
    plain: bool = False  # ssl=false: no TLS even where the server offers it
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
        return cls(host=hosts[0][0], port=hosts[0][1] or DEFAULT_PORT, user=url.username,
                   password=url.password, database=database,
                   connect_timeout=url.float_option("connect_timeout", 5.0),
                   session_timeout=url.float_option("session_timeout", 10.0),
                   tls=from_ssl_options(url), plain=not url.bool_option("ssl", True),
                   unix_socket=unix_socket)

    @property
    def server(self) -> str:
        """Where the server is, for messages: ``host:port`` or the socket's path."""
        return self.unix_socket or f"{self.host}:{self.port}"

    @property
    def check_interval(self) -> float:
        """Seconds between two checks of a held session, and the longest ``GET_LOCK`` wait."""
        return self.session_timeout / 4

    @property
    def io_timeout(self) -> float:
        """Seconds to wait for any reply of the server."""
        return self.session_timeout / 2


def open_connection(settings: Settings) -> Connection:
    """A new session: autocommit, multi-statements, ``wait_timeout`` = the session timeout,
    TLS as a context read anew each time (PyMySQL's ``ssl_*`` arguments check nothing)."""
    return pymysql.connect(
        host=settings.host, port=settings.port, unix_socket=settings.unix_socket,
        user=settings.user, password=settings.password or "", database=settings.database,
        connect_timeout=settings.connect_timeout,
        # Bounds the handshake too, so a server that accepts but never answers fails fast.
        read_timeout=settings.io_timeout, write_timeout=settings.io_timeout,
        autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS,
        init_command=f"SET SESSION wait_timeout = {max(1, math.ceil(settings.session_timeout))}",
        ssl=settings.tls.context() if settings.tls is not None else None,
        ssl_disabled=settings.plain,
    )


def close_quietly(connection: Connection) -> None:
    """Close ``connection``, ending its session (the server frees its locks). Never raises."""
    with contextlib.suppress(Exception):  # already closed or broken: nothing left to free
        connection.close()


CLIENT_ERRORS = (pymysql.Error, OSError, TLSFileError)
"""What connecting and talking to the server may raise."""

# The session is gone or unusable: the server frees its locks once it notices.
# 1927 is MariaDB's ER_CONNECTION_KILLED (``KILL``), absent from PyMySQL's list.
_SESSION_GONE = frozenset({CR.CR_SERVER_GONE_ERROR, CR.CR_SERVER_LOST, CR.CR_CONN_HOST_ERROR,
                           ER.SERVER_SHUTDOWN, 1927})


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
    return text.replace(settings.password, "***") if settings.password else text
