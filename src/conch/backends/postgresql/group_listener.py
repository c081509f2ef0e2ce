"""Pushed group changes for ``postgresql://``: joins and leaves ``NOTIFY`` channel
``conch_groups`` with a digest of the group's name; one thread per coordinator ``LISTEN``s
on a session of its own and calls that group's subscribers (all of them after a reconnect)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.naming import hex_digest

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

    def __init__(self, conninfo: str, describe: Callable[[object], str]) -> None:
        self._conninfo, self._describe = conninfo, describe
        self._stopping = threading.Event()
        self._connection: psycopg.Connection[Any] | None = None
        self._failing = False  # the last attempt to listen failed (and was logged)
        self.forget_parent()
        forget_in_child(self)

    def forget_parent(self) -> None:
        """(Re)start with no subscriber; in a forked child, leave the parent's session be."""
        self._mutex = threading.Lock()
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._thread: threading.Thread | None = None
        connection, self._connection = self._connection, None
        if connection is not None:
            forget_connection(connection)

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
            thread, connection = self._thread, self._connection
        if connection is not None:
            # Shut a duplicate of the socket: never a descriptor libpq closed meanwhile.
            with contextlib.suppress(OSError), socket.socket(
                    fileno=os.dup(connection.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    return
                # Once per outage: watchers still read every poll interval meanwhile.
                log.log(logging.DEBUG if self._failing else logging.WARNING, "conch: %s",
                        self._describe(f"listening for group changes failed, retrying "
                                       f"every {RECONNECT_DELAY:g} s: {exc}"))
                self._failing = True
            self._tell(None)  # a notification may have been missed meanwhile
            self._stopping.wait(RECONNECT_DELAY)

    def _listen(self) -> None:
        with psycopg.Connection.connect(self._conninfo, autocommit=True) as connection:
            with self._mutex:
                if self._stopping.is_set():
                    return
                self._connection = connection
            try:
                connection.execute(f"LISTEN {CHANNEL}")
                self._failing = False
                self._tell(None)  # changes made before LISTEN took effect
                while not self._stopping.is_set():
                    for notification in connection.notifies(timeout=5.0):
                        self._tell(notification.payload)
            finally:
                with self._mutex:
                    self._connection = None

    def _tell(self, payload: str | None) -> None:
        """Call the subscribers of ``payload``'s group (``None``: of every group)."""
        with self._mutex:
            groups = self._subscribers.values() if payload is None \
                else [self._subscribers.get(payload, [])]
            calls = [changed for group in groups for changed in group]
        for changed in calls:
            changed()
