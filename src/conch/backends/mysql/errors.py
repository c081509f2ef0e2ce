"""PyMySQL's exceptions described for users (never the password), and which of them mean
that a connection's session is gone."""

from __future__ import annotations

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import CR, ER  # type: ignore[import-untyped]

from conch.backends.kit.tls import TLSFileError
from conch.backends.kit.tls_diagnosis import explain
from conch.backends.mysql.client import Settings

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

