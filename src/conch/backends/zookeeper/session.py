"""A coordinator's ZooKeeper session: its kazoo client (reconnection, eventlet, digest ACL,
TLS, a redacting logger), losses, requests bounded in time, a new session after a whole
timeout cut off, the clean-up of znodes left behind. Lock handles and groups borrow it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState  # type: ignore[import-untyped]
from kazoo.exceptions import (  # type: ignore[import-untyped]
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.protocol.states import EventType  # type: ignore[import-untyped]
from kazoo.security import (  # type: ignore[import-untyped]
    make_digest_acl,
    make_digest_acl_credential,
)

from conch.backends.base import LossCallback
from conch.backends.kit.session import Heartbeat, Holds
from conch.backends.kit.tls import TLSFiles
from conch.errors import BackendUnavailable
from conch.green import eventlet_patched
from conch.url import RedactingLogger

log = logging.getLogger("conch")
WATCH_AFTER = 1.0  # seconds after which a hold watches its own znode (conch break is a loss)
# kazoo's default back-off grows to an hour between attempts, far past any session timeout.
_RECONNECT = {"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0}


class NoAnswer(BackendUnavailable):
    """ZooKeeper did not answer a request in time (the connection is down or slow)."""


class ConnectionDropped(BackendUnavailable):
    """The connection dropped before the answer; the session, with its znodes, may live on."""


class SessionExpired(BackendUnavailable):
    """The session ended while a request waited: its ephemeral znodes are gone."""


class NoSession(BackendUnavailable):
    """``start()`` got no session from any server within ``connect_timeout``."""


# kazoo's failures (most have no message): what they mean for a waiter, and for a user.
_FAILURES: dict[type[KazooException], tuple[type[BackendUnavailable], str]] = {
    SessionExpiredError: (SessionExpired, "the session expired"),
    ConnectionClosedError: (SessionExpired, "the session was replaced by a new one"),
    ConnectionLoss: (ConnectionDropped, "the connection was lost"),
    NoAuthError: (BackendUnavailable,
                  "not authorized (check the URL's credentials and the chroot's ACL)"),
}


class ZooKeeperSession:
    """A coordinator's ZooKeeper session, shared by all its lock handles. Thread-safe."""

    def __init__(self, hosts: str, session_timeout: float, connect_timeout: float,
                 credentials: tuple[str, str] | None, tls_files: TLSFiles | None = None) -> None:
        self.hosts, self.session_timeout, self.connect_timeout = \
            hosts, session_timeout, connect_timeout
        self.request_timeout = 2 * session_timeout  # by then the session expired, or will
        self.holds: Holds[object] = Holds()
        self.entries: Holds[object] = Holds()  # group entries: they outlive a disconnection
        self.client = _new_client(hosts, session_timeout, credentials, tls_files)
        self.generation = 0  # +1 each time the session ends, its znodes with it
        self._mutex = threading.Lock()  # orders state changes against new holds
        self._connections = 0  # counts reconnections, so a failed clean-up knows to retry
        self._abandoned: dict[str, set[str]] = {}  # parent path → our children's name prefixes
        self._cleaning = False
        self._unwatched: dict[object, Callable[[], None]] = {}  # by hold
        self._watcher = Heartbeat("conch-zookeeper-watches", WATCH_AFTER, self._watch_holds)
        self._renewing = threading.Lock()  # a new session is never opened as we close
        self._closed = False

    def open(self, root: str) -> None:
        """Start the session (at most ``connect_timeout`` seconds) and create ``root``."""
        self.client.add_listener(self._on_state)
        try:
            self.client.start(timeout=self.connect_timeout)
        except self.client.handler.timeout_exception:
            self.client.remove_listener(self._on_state)
            raise NoSession(f"cannot reach ZooKeeper at {self.hosts} within "
                            f"{self.connect_timeout:g} s") from None
        self._watcher.start()
        try:
            self.answer(self.client.ensure_path_async(root), f"create {root}")
            # ensure_path needs no right on an existing root: wrong credentials fail here.
            self.answer(self.client.get_async(root), f"read {root}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the session: ZooKeeper deletes its znodes at once. Never raises."""
        with self._renewing:
            self._closed = True
        self._watcher.stop()
        try:
            self.client.stop()
            self.client.close()
        except Exception:  # stopping twice or a dead connection: the session ends either way
            log.debug("closing the ZooKeeper client failed", exc_info=True)
        self.client.remove_listener(self._on_state)

    def answer(self, result: Any, doing: str, within: float | None = None,
               passing: tuple[type[KazooException], ...] = ()) -> Any:
        """The outcome of kazoo request ``result``, awaited ``within`` seconds (default
        ``request_timeout``); kazoo's errors but ``NoNodeError`` and ``passing`` as conch's."""
        wait = self.request_timeout if within is None else within
        try:
            return result.get(timeout=wait)
        except (NoNodeError, *passing):
            raise
        except self.client.handler.timeout_exception:
            raise NoAnswer(f"ZooKeeper at {self.hosts} did not answer within {wait:g} s "
                           f"({doing})") from None
        except KazooException as exc:
            kind, reason = _FAILURES.get(type(exc), (BackendUnavailable,
                                                     f"{type(exc).__name__} {exc}".strip()))
            if isinstance(exc, ConnectionClosedError) and self._closed:
                kind, reason = BackendUnavailable, "the client is closed (coordinator stopped)"
            raise kind(f"ZooKeeper at {self.hosts} failed to {doing}: {reason}") from None

    def read(self, result: Any, doing: str, missing: Any = None,
             within: float | None = None) -> Any:
        """``answer()``, or ``missing`` when the znode is not there (any more)."""
        try:
            return self.answer(result, doing, within)
        except NoNodeError:
            return missing

    def keep(self, kept: Holds[object], item: object, on_lost: LossCallback,
             generation: int) -> bool:
        """Report the loss of ``item`` through ``kept``; False when the session ended since
        ``generation`` or, for a hold, the connection is down now."""
        with self._mutex:
            if self.generation != generation or (kept is self.holds and not self.client.connected):
                return False
            kept.add(item, on_lost)
            return True

    def abandon(self, parent: str, prefix: str) -> None:
        """Delete, once connected, the child of ``parent`` whose name starts with ``prefix``."""
        with self._mutex:
            self._abandoned.setdefault(parent, set()).add(prefix)
        self._start_cleaning()

    def on_deletion(self, path: str, gone: Callable[[], None]) -> None:
        """Call ``gone()`` if znode ``path`` is missing, or deleted before its data changes
        (a write of ours sets this watch again); not awaited."""
        self.client.exists_async(path, watch=lambda event: gone() if event.type ==
                                 EventType.DELETED else None).rawlink(
            lambda result: gone() if result.successful() and result.value is None else None)

    def watch_soon(self, hold: object, watch: Callable[[], None]) -> None:
        """Call ``watch`` in ``WATCH_AFTER`` s if ``hold`` is held then (a short hold: never)."""
        with self._mutex:
            self._unwatched[hold] = watch

    def _watch_holds(self) -> None:
        with self._mutex:
            pending, self._unwatched = self._unwatched, {}
        held = set(self.holds.snapshot())
        for hold, watch in pending.items():
            if hold in held:
                watch()

    def _on_state(self, state: str) -> None:
        # In kazoo's connection thread: never blocks.
        with self._mutex:  # kazoo changed client.connected already
            self._connections += state == KazooState.CONNECTED
            self.generation += state == KazooState.LOST
        if state == KazooState.SUSPENDED:
            self.holds.lose_all("lost the connection to ZooKeeper: the session may expire "
                                "and another client take the lock")
            # kazoo suspends the connection 2/3 of the timeout after the last answer, and
            # hears of an expiry only once reconnected: by the timeout, the entries are gone.
            self._unless_reconnected(self.session_timeout / 3, lambda: self.entries.lose_all(
                "cut off from ZooKeeper past the session timeout: the session has expired"))
            self._unless_reconnected(self.session_timeout, self._renew)
        elif state == KazooState.LOST:
            self.holds.lose_all("the ZooKeeper session expired or was closed")
            self.entries.lose_all("the ZooKeeper session expired or was closed")
        self._start_cleaning()

    def _unless_reconnected(self, delay: float, action: Callable[[], None]) -> None:
        """Call ``action`` if the connection is still down ``delay`` seconds from now."""
        with self._mutex:
            connections = self._connections

        def check() -> None:
            with self._mutex:
                cut_off = not (self.client.connected or self._closed) and \
                    self._connections == connections
            if cut_off:
                action()
        timer = threading.Timer(delay, check)
        timer.daemon = True
        timer.start()

    def _renew(self) -> None:
        """Open a new session for one the servers expired, or lost with their data (kazoo
        would retry for ever: a wiped server refuses a client that saw newer zxids)."""
        seen = self.client.last_zxid
        log.warning("ZooKeeper at %s: no server took the session back within %g s; opening "
                    "a new session", self.hosts, self.session_timeout)
        try:
            self.client.stop()  # LOST: every hold and group entry is reported lost
        except Exception:  # its connection would not stop in time: start it again anyway
            log.debug("stopping the ZooKeeper client failed", exc_info=True)
        with self._renewing:  # close() may have stopped it meanwhile: leave it stopped
            if self._closed:
                return
            connected = self.client.start_async()
        if connected.wait(self.request_timeout):
            with contextlib.suppress(BackendUnavailable, KazooException):
                self.answer(self.client.exists_async("/"), "read /")
                if self.client.last_zxid < seen:
                    log.warning("ZooKeeper at %s lost its data (its last transaction 0x%x is "
                                "older than 0x%x seen before): fencing tokens start over",
                                self.hosts, self.client.last_zxid, seen)

    def _start_cleaning(self) -> None:
        with self._mutex:
            start = self.client.connected and bool(self._abandoned) and not self._cleaning
            self._cleaning |= start
        if start:
            self.client.handler.spawn(self._clean)

    def _clean(self) -> None:
        """Delete the abandoned znodes; after a failure, go on only if reconnected since."""
        while True:
            with self._mutex:
                if not self._abandoned:
                    self._cleaning = False
                    return
                parent, prefixes = self._abandoned.popitem()
                connections = self._connections
            try:
                listing = self.client.get_children_async(parent)
                for child in self.read(listing, "list " + parent, []):
                    if child.startswith(tuple(prefixes)):
                        with contextlib.suppress(NoNodeError):
                            self.answer(self.client.delete_async(f"{parent}/{child}"),
                                        "delete " + child)
            except (BackendUnavailable, KazooException):
                with self._mutex:
                    self._abandoned.setdefault(parent, set()).update(prefixes)
                    if connections == self._connections:  # the next connection retries
                        self._cleaning = False
                        return


def _new_client(hosts: str, session_timeout: float, credentials: tuple[str, str] | None,
               tls_files: TLSFiles | None) -> KazooClient:
    """A client of ``hosts`` (not started)."""
    options: dict[str, Any] = {"connection_retry": dict(_RECONNECT)}
    secrets: tuple[str, ...] = ()
    if eventlet_patched():
        # With the threading handler under eventlet, a connection dropped ("socket time-out
        # during read") as soon as a second client ran; the retry sleeps as the handler does.
        import kazoo.handlers.eventlet  # type: ignore[import-untyped]
        options["handler"] = handler = kazoo.handlers.eventlet.SequentialEventletHandler()
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
