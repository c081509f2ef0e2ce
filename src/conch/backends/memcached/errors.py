"""What a ``memcached://`` failure says: where and what failed, TLS problems in the words
of every TLS backend (URLs hold no credentials; kit/errors.py scrubs other secrets)."""

from __future__ import annotations

import ssl

from pymemcache.exceptions import MemcacheUnexpectedCloseError  # type: ignore[import-untyped]

from conch.backends.kit.tls_diagnosis import diagnose_endpoints, explain
from conch.backends.memcached.client import MemcachedOptions

_CLOSED = (MemcacheUnexpectedCloseError, ConnectionResetError, ssl.SSLEOFError)


def describe(options: MemcachedOptions, exc: BaseException, *, first: bool = False,
             tls_context: ssl.SSLContext | None = None) -> str:
    """An error's text for users. The closed connection of a ``first`` request may be a
    TLS problem pymemcache cannot see: it is diagnosed on a connection of conch's own."""
    why = explain(exc)
    if why is None and first and isinstance(exc, _CLOSED):
        why = diagnose_endpoints([(options.host, options.port)], tls_context,
                                 options.connect_timeout, "add ssl=true")
    if why is None and isinstance(exc, TimeoutError):
        hint = " (no answer to the TLS handshake: does the port speak TLS?)" \
            if options.tls and not isinstance(exc, ssl.SSLError) else ""
        why = f"no reply within {options.timeout} s (connect: {options.connect_timeout} s){hint}"
    return f"memcached at {options.where}: {why or f'{type(exc).__name__}: {exc}'}"
