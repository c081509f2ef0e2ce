"""What the TLS failure tests of redis, mysql and memcached expect, and their one check.

Each failure must be one :class:`conch.BackendUnavailable` naming where and what, without
a secret, and without a client library's exception chained to it (it would print).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

import conch

_CLOSED_IN_HANDSHAKE = "wants a client certificate it did not get or trust"
"""The server's alert about the client certificate may arrive as a bare end of the
connection instead (a race with its closing), which says less but still names it."""

WRONG_CA = re.escape("TLS: the server's certificate was refused (self-signed certificate "
                     "in certificate chain)")
CLIENT_CERTIFICATE_REFUSED = (r"the server refused the client certificate \(tlsv1 alert "
                              r"unknown ca\)|" + _CLOSED_IN_HANDSHAKE)
CLIENT_CERTIFICATE_MISSING = "the server requires a client certificate|" + _CLOSED_IN_HANDSHAKE


def missing_file(option: str) -> str:
    """The message of a URL whose ``option`` names ``/nonexistent/ca.pem``."""
    return re.escape(f"cannot use the TLS files ({option}=/nonexistent/ca.pem): "
                     f"No such file or directory")


def one_clear_error(url: str, where: str, expected: str, secrets: Iterable[str]) -> str:
    """Connect to ``url``: check the failure names ``where`` and matches ``expected``, shows
    none of ``secrets`` and chains nothing; return its message."""
    with pytest.raises(conch.BackendUnavailable) as raised:
        conch.connect(url)
    message = str(raised.value)
    assert where in message and re.search(expected, message), message
    assert not any(secret in message for secret in secrets if secret), message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    return message
