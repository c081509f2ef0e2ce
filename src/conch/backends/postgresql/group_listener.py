"""Pushed group changes for ``postgresql://``: joins and leaves ``NOTIFY`` channel
``conch_groups`` with a digest of the group's name; one thread per coordinator ``LISTEN``s
on a session of its own and wakes that group's subscribers (all of them after a reconnect),
through :class:`conch.backends.kit.group_subscribers.GroupSubscribers`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.group_subscribers import GroupSubscribers, Wake
from conch.backends.kit.naming import hex_digest
from conch.backends.postgresql.session import Session, forget_connection
from conch.errors import ConchError

log = logging.getLogger("conch")

CHANNEL = "conch_groups"
RECONNECT_DELAY = 1.0


def channel_payload(group: bytes) -> str:
    """What a change of ``group`` sends on :data:`CHANNEL` (short, whatever the name)."""
    return hex_digest(b"conch-group\0" + group, 32)


class Listener:
    """Calls each group's subscribers when a notification names it. Thread-safe."""

    def __init__(self, open_session: Callable[[], Session],
                 describe: Callable[[object], str]) -> None:
        self._open_session, self._describe = open_session, describe
        self._subscribers = GroupSubscribers("conch-postgresql-group-listener", self._run)
        self._session: Session | None = None
        self._failing = False  # the last attempt to listen failed (and was logged)
        forget_in_child(self)

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed`` on each notification about ``group``; returns how to stop."""
        return self._subscribers.subscribe(channel_payload(group).encode(), changed)

    def close(self) -> None:
        """Stop listening: the thread's wait is cut short (its socket shut) and it ends."""
        self._subscribers.stop()
        session = self._session
        if session is not None:
            session.shutdown()

    def forget_parent(self) -> None:
        """In a forked child: a thread of its own later; the parent's session left be."""
        self._subscribers.forget_parent()
        session, self._session = self._session, None
        if session is not None:
            forget_connection(session)

    def _run(self, stopped: threading.Event, wake: Wake) -> None:
        while not stopped.is_set():
            try:
                self._listen(stopped, wake)
            except (psycopg.Error, ConchError) as exc:
                if stopped.is_set():
                    return
                # Once per outage: watchers still read every poll interval meanwhile.
                log.log(logging.DEBUG if self._failing else logging.WARNING,
                        "conch: listening for group changes failed, retrying every %g s: %s",
                        RECONNECT_DELAY, exc if isinstance(exc, ConchError)
                        else self._describe(exc))
                self._failing = True
            wake(None)  # a notification may have been missed meanwhile
            stopped.wait(RECONNECT_DELAY)

    def _listen(self, stopped: threading.Event, wake: Wake) -> None:
        session = self._session = self._open_session()
        try:
            if stopped.is_set():  # close() came first: it could not shut this one
                return
            session.execute(f"LISTEN {CHANNEL}")
            self._failing = False
            wake(None)  # changes made before LISTEN took effect
            session.limit = None  # wait as long as it takes (green under eventlet); close()
            for notification in session.notifies():  # shuts the socket to end the wait
                wake((notification.payload.encode(),))
        finally:
            self._session = None
            session.end()
