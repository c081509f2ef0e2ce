"""What a ``memcached://`` failure says: where, and what failed (TLS problems in the words
every TLS backend uses). URLs hold no credentials; kit/errors.py scrubs the other secrets."""

from __future__ import annotations

import ssl

from pymemcache.exceptions import MemcacheUnexpectedCloseError  # type: ignore[import-untyped]

from conch.backends.kit.tls_diagnosis import diagnose_endpoints, explain
from conch.backends.memcached.client import MemcachedOptions

_CLOSED = (MemcacheUnexpectedCloseError, ConnectionResetError, ssl.SSLEOFError)


def describe(options: MemcachedOptions, exc: BaseException) -> str:
    """An error's text for users."""
    why = explain(exc)
    if why is None and isinstance(exc, TimeoutError):
        hint = " (no answer to the TLS handshake: does the port speak TLS?)" \
            if options.tls and not isinstance(exc, ssl.SSLError) else ""
        why = f"no reply within {options.timeout} s (connect: {options.connect_timeout} s){hint}"
    return f"memcached at {options.where}: {why or f'{type(exc).__name__}: {exc}'}"


def describe_first(options: MemcachedOptions, tls_context: ssl.SSLContext | None,
                   exc: BaseException) -> str:
    """:func:`describe` of a failed first request; a closed connection, which may be a TLS
    problem pymemcache could not see, diagnosed on a connection of conch's own."""
    problem = diagnose_endpoints([(options.host, options.port)], tls_context,
                                 options.connect_timeout, "add ssl=true") \
        if isinstance(exc, _CLOSED) else None
    return f"memcached at {options.where}: {problem}" if problem else describe(options, exc)
