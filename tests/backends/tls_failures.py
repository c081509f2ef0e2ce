"""The TLS failure tests' expectations and their one check, for every TLS backend (redis
and its sentinels, mysql, memcached, etcd, zookeeper).

Each failure must be one :class:`conch.BackendUnavailable`, raised in good time, naming
where and what, without a secret of the URL and without a client library's exception
chained to it (it would print as "During handling of the above exception").
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Iterable

import pytest

import conch
from conch.url import parse_url

_UNTRUSTED = "wants a client certificate it did not get or trust"
"""Under TLS 1.3 the server's alert about the client certificate may reach a client
library as a bare end of the connection instead (a race with its closing): the message
says less, but still names the certificate."""

WRONG_CA = re.escape("TLS handshake failed: certificate verify failed: ") + (
    "(self-signed certificate in certificate chain|unable to get local issuer certificate)")
CLIENT_CERTIFICATE_REFUSED = "the server refused the client certificate|" + _UNTRUSTED
CLIENT_CERTIFICATE_MISSING = ("the server requires a client certificate|the server refused "
                              "the client certificate, or requires one|" + _UNTRUSTED)
NOT_TLS = re.escape("TLS handshake failed: the server does not speak TLS on this port")


def plain_to_tls(hint: str) -> str:
    """A plain client on a TLS port: found by the diagnosis, with how to ask for TLS."""
    return re.escape(f"the server expects TLS on this port: {hint}")


def missing_file(option: str, path: str = "/nonexistent/ca.pem") -> str:
    """The message of a URL whose ``option`` names ``path``, which does not exist."""
    return (r"cannot use the TLS files \([^)]*" + re.escape(f"{option}={path}")
            + r"[^)]*\): No such file or directory")


def one_clear_error(url: str, where: str, expected: str, secrets: Iterable[str] = (),
                    within: float = 10.0) -> str:
    """Start a coordinator of ``url``: check that it fails within ``within`` seconds with
    a message naming ``where`` and matching ``expected``, showing neither a secret of the
    URL nor one of ``secrets``, and chaining nothing; return the message."""
    started = time.monotonic()
    with pytest.raises(conch.BackendUnavailable) as raised:
        conch.connect(url).stop()
    took = time.monotonic() - started
    error = raised.value
    message = str(error)
    print(f"\n{took:.1f} s: {message}")
    assert took < within, f"the error took {took:.1f} s: {message}"
    assert where in message and re.search(expected, message), message
    shown = "".join(traceback.format_exception(error))
    assert error.__cause__ is None, shown
    assert error.__context__ is None or error.__suppress_context__, shown
    hidden = [*parse_url(url).secrets, *secrets]
    assert not any(secret in shown for secret in hidden if secret), shown
    return message
