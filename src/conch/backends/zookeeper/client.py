"""A coordinator's :class:`kazoo.client.KazooClient`: reconnection at most a second apart,
kazoo's eventlet handler under eventlet, digest auth and ACL, TLS, a redacting logger."""

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

# kazoo's default back-off grows to an hour between attempts, far past any session timeout.
_RECONNECT = {"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0}


def new_client(hosts: str, session_timeout: float, credentials: tuple[str, str] | None,
               tls_files: TLSFiles | None) -> KazooClient:
    """A client of ``hosts`` (not started)."""
    options: dict[str, Any] = {"connection_retry": dict(_RECONNECT)}
    secrets: tuple[str, ...] = ()
    if eventlet_patched():
        # With the threading handler under eventlet, a connection dropped ("socket time-out
        # during read") as soon as a second client ran; the retry sleeps as the handler does.
        from kazoo.handlers.eventlet import (  # type: ignore[import-untyped]
            SequentialEventletHandler,
        )
        options["handler"] = handler = SequentialEventletHandler()
        options["connection_retry"]["sleep_func"] = handler.sleep_func
    if credentials is not None:
        user, password = credentials
        # Nodes we create are readable and writable by members with the same credentials.
        options.update(auth_data=[("digest", f"{user}:{password}")],
                       default_acl=[make_digest_acl(user, password, all=True)])
        secrets = (password, make_digest_acl_credential(user, password))
    if tls_files is not None:
        options.update(use_ssl=True, ca=tls_files.ca, certfile=tls_files.cert,
                       keyfile=tls_files.key, keyfile_password=tls_files.key_password,
                       verify_certs=tls_files.verify, check_hostname=tls_files.check_hostname)
        secrets += (tls_files.key_password or "",)
    logger = RedactingLogger(logging.getLogger("kazoo.client"), secrets)
    return KazooClient(hosts=hosts, timeout=session_timeout, logger=logger, **options)
