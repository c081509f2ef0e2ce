"""The connection settings of a ``mysql://user:password@host:port/database`` URL, and opening
one connection (one server session) with them. Options: docs/mysql.md."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import CLIENT  # type: ignore[import-untyped]

from conch.backends.kit.tls import SSL_URL_OPTIONS, TLSFiles, from_ssl_options
from conch.errors import InvalidURL
from conch.url import BackendURL

Connection = Any
"""A ``pymysql.connections.Connection`` (PyMySQL ships no type hints)."""

DEFAULT_PORT = 3306


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and how to connect. The server ends a session silent for ``session_timeout``
    seconds (freeing its locks); a holder checks its session every quarter of that and
    gives up on a reply after half of it, so it notices a dead link first."""

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
        """Seconds between two checks of a held session, and the longest ``GET_LOCK`` wait
        (so that its reply comes within :attr:`io_timeout`)."""
        return self.session_timeout / 4

    @property
    def io_timeout(self) -> float:
        """Seconds to wait for any reply of the server."""
        return self.session_timeout / 2


def open_connection(settings: Settings) -> Connection:
    """A new session: autocommit, multi-statements, ``wait_timeout`` = the session timeout.

    The TLS files are read for each session (renewed certificates are used), as a context:
    PyMySQL's ``ssl_*`` arguments check neither certificate nor host name unless told.
    """
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
