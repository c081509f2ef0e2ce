"""Pushed group changes for ``postgresql://``: joins and leaves ``NOTIFY`` channel
``conch_groups`` with a digest of the group's name; one thread per coordinator ``LISTEN``s
on a session of its own and calls that group's subscribers (all of them after a reconnect)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.naming import hex_digest
from conch.backends.postgresql.session import Session
from conch.errors import ConchError

log = logging.getLogger("conch")

CHANNEL = "conch_groups"
RECONNECT_DELAY = 1.0


def channel_payload(group: bytes) -> str:
    """What a change of ``group`` sends on :data:`CHANNEL` (short, whatever the name)."""
    return hex_digest(b"conch-group\0" + group, 32)


def forget_connection(connection: psycopg.Connection[Any]) -> None:
    """In a forked child: close ``connection`` without a word to the parent's server (libpq
    would send its goodbye when the object is collected)."""
    if not connection.closed:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, connection.pgconn.socket)
        os.close(devnull)
        connection.pgconn.finish()


class Listener:
    """Calls each group's subscribers when a notification names it. Thread-safe."""

    def __init__(self, open_session: Callable[[], Session],
                 describe: Callable[[object], str]) -> None:
        self._open_session, self._describe = open_session, describe
        self._stopping = threading.Event()
        self._session: Session | None = None
        self._failing = False  # the last attempt to listen failed (and was logged)
        self.forget_parent()
        forget_in_child(self)

    def forget_parent(self) -> None:
        """(Re)start with no subscriber; in a forked child, leave the parent's session be."""
        self._mutex = threading.Lock()
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._thread: threading.Thread | None = None
        session, self._session = self._session, None
        if session is not None:
            forget_connection(session)

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed`` on each notification about ``group``; returns how to stop."""
        payload = channel_payload(group)
        with self._mutex:
            self._subscribers.setdefault(payload, []).append(changed)
            if self._thread is None and not self._stopping.is_set():  # the first subscriber
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="conch-postgresql-group-listener")
                self._thread.start()
        return functools.partial(self._unsubscribe, payload, changed)

    def _unsubscribe(self, payload: str, changed: Callable[[], None]) -> None:
        with self._mutex, contextlib.suppress(ValueError):  # unsubscribed already
            self._subscribers.get(payload, []).remove(changed)

    def close(self) -> None:
        """Stop listening: the thread's wait is cut short and its session closed."""
        self._stopping.set()
        with self._mutex:
            thread, session = self._thread, self._session
        if session is not None:
            session.shutdown()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except (psycopg.Error, ConchError) as exc:
                if self._stopping.is_set():
                    return
                # Once per outage: watchers still read every poll interval meanwhile.
                log.log(logging.DEBUG if self._failing else logging.WARNING,
                        "conch: listening for group changes failed, retrying every %g s: %s",
                        RECONNECT_DELAY, exc if isinstance(exc, ConchError)
                        else self._describe(exc))
                self._failing = True
            self._tell(None)  # a notification may have been missed meanwhile
            self._stopping.wait(RECONNECT_DELAY)

    def _listen(self) -> None:
        session = self._open_session()
        with self._mutex:
            if self._stopping.is_set():
                session.end()
                return
            self._session = session
        try:
            session.execute(f"LISTEN {CHANNEL}")
            self._failing = False
            self._tell(None)  # changes made before LISTEN took effect
            session.limit = None  # wait as long as it takes (green under eventlet); close()
            for notification in session.notifies():  # shuts the socket to end the wait
                self._tell(notification.payload)
        finally:
            with self._mutex:
                self._session = None
            session.end()

    def _tell(self, payload: str | None) -> None:
        """Call the subscribers of ``payload``'s group (``None``: of every group)."""
        with self._mutex:
            groups = self._subscribers.values() if payload is None \
                else [self._subscribers.get(payload, [])]
            calls = [changed for group in groups for changed in group]
        for changed in calls:
            changed()
