"""A ``memcached://`` coordinator's connections and liveness, which its locks borrow:
pymemcache's pooled client, idempotent steps retried once on a fresh connection, and the
holds' TTL renewal (kit/ttl.py: one ``gets`` of every held key, then a ``cas`` each)."""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Callable
from typing import TypeVar

from pymemcache.client.base import Client  # type: ignore[import-untyped]
from pymemcache.exceptions import MemcacheUnknownCommandError  # type: ignore[import-untyped]

from conch.backends.kit.errors import translated, unavailable
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.tls import client_context
from conch.backends.kit.ttl import TtlHold, TtlSession
from conch.backends.memcached.client import (
    CAS_TRIES,
    CLIENT_ERRORS,
    TRANSIENT,
    LockKeys,
    new_client,
)
from conch.backends.memcached.client import MemcachedOptions as Options
from conch.backends.memcached.errors import describe, describe_first
from conch.url import BackendURL

T = TypeVar("T")


class MemcachedSession:
    """The pooled client (:attr:`client`, once connected) and the holds' renewal."""

    client: Client
    _renewer: Client

    def __init__(self, url: BackendURL) -> None:
        self.url = url
        self.options = Options.from_url(url)
        self.describe = functools.partial(describe, self.options)
        self.ttl: TtlSession[LockKeys] = TtlSession(
            "memcached", self.options.lease, self._renew, self.describe, CLIENT_ERRORS)
        self._tls_context: ssl.SSLContext | None = None
        self.closed = False
        forget_in_child(self)

    def connect(self) -> None:
        """Read the TLS files, check that the server speaks the meta protocol (memcached
        1.6+: the release needs it), and start renewing."""
        options = self.options
        if options.tls is not None:
            self._tls_context = client_context(options.tls, f"memcached at {options.where}")
        self.client = new_client(options, self._tls_context, pooled=True)
        try:
            self.client.version()  # long enough for a TLS port to refuse it at once
            reply = self.client.raw_command(b"mn")  # meta no-op
        except MemcacheUnknownCommandError:
            reply = b"ERROR"
        except CLIENT_ERRORS as exc:
            raise unavailable(self.url, describe_first(options, self._tls_context, exc)) from None
        if reply != b"MN":
            raise unavailable(self.url, f"memcached at {options.where} does not speak the meta "
                              f"protocol (mn answered {reply[:40]!r}): conch needs memcached "
                              f"1.6 or later")
        # The renewals' own connection: a renewal waits no longer than one interval.
        self._renewer = new_client(options, self._tls_context, pooled=False,
                                   timeout=min(options.timeout, self.ttl.interval))
        self.ttl.start()

    def close(self) -> None:
        """Stop renewing (each hold is reported lost) and close the connections (a later
        call opens one: a hold granted as the coordinator stopped is still freed)."""
        self.closed = True
        self.ttl.stop()
        self._renewer.close()
        self.client.close()

    def forget_parent(self) -> None:
        """In a forked child: connections of its own; the parent's stay the parent's."""
        self.client = new_client(self.options, self._tls_context, pooled=True)

    def translated(self) -> contextlib.AbstractContextManager[None]:
        """Client exceptions in the block become :class:`~conch.BackendUnavailable`."""
        return translated(self.url, CLIENT_ERRORS, self.describe)

    def check_open(self) -> None:
        """Raise :class:`~conch.BackendUnavailable` once the coordinator was stopped."""
        if self.closed:
            raise unavailable(self.url, f"memcached at {self.options.where}: the coordinator "
                              "was stopped")

    def run(self, step: Callable[[Client, bool], T]) -> T:
        """``step(client, retried)``, once more after a connection failure (a stale pooled
        connection after a server restart), on a fresh connection: for idempotent steps.
        ``retried`` tells the step that an earlier try may have done its work."""
        try:
            return step(self.client, False)
        except TRANSIENT:
            client = new_client(self.options, self._tls_context, pooled=False)
            try:
                return step(client, True)
            finally:
                client.close()

    def _renew(self, holds: list[TtlHold[LockKeys]], within: float) -> list[bool]:
        """Reset each held key's expiry if it still holds its hold's value (``within``: the
        renewer's timeout, which is at most one interval already)."""
        renewer, ttl = self._renewer, self.options.ttl
        found = renewer.gets_many([hold.keys.holder for hold in holds])
        return [extend(renewer, hold.keys.holder, hold.value, found.get(hold.keys.holder), ttl)
                for hold in holds]


def extend(client: Client, key: bytes, value: bytes, found: tuple[bytes, bytes] | None,
           ttl: int) -> bool:
    """Reset ``key``'s expiry to ``ttl`` if it still holds ``value`` (``found``: the value
    and CAS id just read, ``None``: no such key)."""
    for _ in range(CAS_TRIES):
        if found is None or found[0] != value:
            return False
        # cas, not touch: touch would extend a key another holder set since the read.
        if client.cas(key, value, found[1], expire=ttl):
            return True
        value_read, cas = client.gets(key)
        found = None if value_read is None else (value_read, cas)
    return False
