"""The :class:`kazoo.client.KazooClient` of a ZooKeeper session, as conch configures it.

* **handler and reconnection**: kazoo's threading handler, or its eventlet handler in a
  monkey-patched process; reconnection attempts at most a second apart.
* **credentials**: digest auth, and an ACL that gives our nodes to the same credentials.
* **TLS**: :class:`conch.backends.kit.tls.TLSFiles` as kazoo's options (kazoo reads the files
  itself, at each connection attempt).
* **secrets**: kazoo logs its auth packet, password included, at DEBUG; its logger
  replaces the password, the digest and the key password by ``***``.
"""

from __future__ import annotations

import logging
from typing import Any

from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.security import (  # type: ignore[import-untyped]
    make_digest_acl,
    make_digest_acl_credential,
)

from conch.backends.kit.tls import TLSFiles
from conch.green import eventlet_patched
from conch.url import RedactingLogger

# While the server is away kazoo retries the connection for as long as the session
# lives; its default back-off grows to an hour between attempts, far past any
# session timeout, so cap it.
_RECONNECT = {"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0}


def new_client(hosts: str, session_timeout: float, credentials: tuple[str, str] | None,
               tls_files: TLSFiles | None) -> KazooClient:
    """A client of ``hosts`` (not started)."""
    options: dict[str, Any] = {}
    secrets: tuple[str, ...] = ()
    if credentials is not None:
        user, password = credentials
        # Nodes we create are readable and writable by members with the same credentials.
        options = {"auth_data": [("digest", f"{user}:{password}")],
                   "default_acl": [make_digest_acl(user, password, all=True)]}
        secrets = (password, make_digest_acl_credential(user, password))
    if tls_files is not None:
        options.update(use_ssl=True, ca=tls_files.ca, certfile=tls_files.cert,
                       keyfile=tls_files.key, keyfile_password=tls_files.key_password,
                       verify_certs=tls_files.verify, check_hostname=tls_files.check_hostname)
        secrets += (tls_files.key_password or "",)
    return KazooClient(
        hosts=hosts, timeout=session_timeout,
        logger=RedactingLogger(logging.getLogger("kazoo.client"), secrets),
        **_handler_and_retry(), **options
    )


def _handler_and_retry() -> dict[str, Any]:
    """The KazooClient arguments for its handler and reconnection policy.

    Under eventlet, kazoo's own eventlet handler: with its default threading handler
    (green threads, green ``select``) a client's connection dropped ("socket time-out
    during read" or "write") as soon as a second client ran in the process. kazoo
    wants the retry policy to sleep as the handler does.
    """
    if not eventlet_patched():
        return {"connection_retry": dict(_RECONNECT)}
    from kazoo.handlers.eventlet import SequentialEventletHandler  # type: ignore[import-untyped]

    handler = SequentialEventletHandler()
    return {"handler": handler,
            "connection_retry": {**_RECONNECT, "sleep_func": handler.sleep_func}}
