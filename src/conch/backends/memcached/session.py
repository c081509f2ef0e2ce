"""A ``memcached://`` coordinator's connections, which its locks borrow (idempotent steps
retried once on a fresh connection), and the holds' renewal (kit/ttl.py)."""

from __future__ import annotations

import contextlib
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
    MemcachedOptions,
    new_client,
)
from conch.url import BackendURL

T = TypeVar("T")
Keeps = Callable[[bytes, bytes], bool]  # whether a key's value still holds a hold's value


class MemcachedSession:
    """The pooled client (:attr:`client`, once connected) and the holds' renewal."""

    client: Client
    _renewer: Client

    def __init__(self, url: BackendURL, keeps: Keeps) -> None:
        self.url = url
        self.options = MemcachedOptions.from_url(url)
        self.describe = self.options.describe
        self.ttl = self._new_ttl()
        self.closed = False
        self._keeps = keeps
        self._tls_context: ssl.SSLContext | None = None
        forget_in_child(self)

    def connect(self) -> None:
        """Check that the server speaks the meta protocol (memcached 1.6+), start renewing."""
        options, where = self.options, f"memcached at {self.options.where}"
        if options.tls is not None:
            self._tls_context = client_context(options.tls, where)
        self.client = new_client(options, self._tls_context)
        try:
            self.client.version()  # long enough for a TLS port to refuse it at once
            reply = self.client.raw_command(b"mn")  # the meta no-op
        except MemcacheUnknownCommandError:
            reply = b"ERROR"
        except CLIENT_ERRORS as exc:
            raise unavailable(self.url, self.describe(
                exc, first=True, tls_context=self._tls_context)) from None
        if reply != b"MN":
            raise unavailable(self.url, f"{where} does not speak the meta protocol (mn "
                              f"answered {reply[:40]!r}): conch needs memcached 1.6 or later")
        self._renewer = self._new_renewer()
        self.ttl.start()

    def close(self) -> None:
        """Stop renewing (each hold is reported lost) and close the connections."""
        self.closed = True
        self.ttl.stop()
        self._renewer.close()
        self.client.close()

    def forget_parent(self) -> None:
        """In a forked child: connections and renewals of its own."""
        self.client = new_client(self.options, self._tls_context)
        if hasattr(self, "_renewer") and not self.closed:
            self._renewer = self._new_renewer()
            self.ttl = self._new_ttl()
            self.ttl.start()

    def _new_ttl(self) -> TtlSession[bytes]:
        # A key set with expiry ttl surely lives ttl - 1 s (memcached's clock ticks in s).
        return TtlSession("memcached", self.options.ttl - 1, self._renew, self.describe,
                          CLIENT_ERRORS)

    def _new_renewer(self) -> Client:
        return new_client(self.options, self._tls_context, pooled=False,
                          timeout=min(self.options.timeout, self.ttl.interval))

    def check_open(self) -> None:
        if self.closed:
            raise unavailable(self.url, f"memcached at {self.options.where}: the coordinator "
                              "was stopped")

    def translated(self) -> contextlib.AbstractContextManager[None]:
        return translated(self.url, CLIENT_ERRORS, self.describe)

    def call(self, step: Callable[[Client, bool], T]) -> T:
        """:meth:`run` on an open session, client exceptions translated."""
        self.check_open()
        with self.translated():
            return self.run(step)

    def run(self, step: Callable[[Client, bool], T]) -> T:
        """``step(client, retried)``, again on a fresh connection after a connection failure
        (for idempotent steps: ``retried``, the first try may have done its work)."""
        try:  # one pooled connection for the whole step: one checkout, not one per call
            with self.client.client_pool.get_and_release(destroy_on_fail=True) as client:
                return step(client, False)
        except TRANSIENT:
            with contextlib.closing(new_client(self.options, self._tls_context,
                                               pooled=False)) as client:
                return step(client, True)

    def _renew(self, holds: list[TtlHold[bytes]], within: float) -> list[bool]:
        # within: the renewer's timeout is one interval at most already.
        found = self._renewer.gets_many([hold.keys for hold in holds])
        return [self._extend(hold.keys, hold.value, found.get(hold.keys, (None, None)))
                for hold in holds]

    def _extend(self, key: bytes, value: bytes, found: tuple[bytes | None, bytes | None]) -> bool:
        """Reset ``key``'s expiry if it still keeps ``value`` (``found``: its value and CAS id
        just read); a ``cas`` beaten by another writer of a value that keeps it reads again."""
        current, cas = found
        for _ in range(CAS_TRIES):
            if current is None or not self._keeps(current, value):
                return False
            # cas, not touch: touch would extend a key another holder set since the read.
            if self._renewer.cas(key, current, cas, expire=self.options.ttl):
                return True
            current, cas = self._renewer.gets(key)
        return current is not None and self._keeps(current, value)
