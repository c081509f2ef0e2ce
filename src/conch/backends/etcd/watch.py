"""One watch stream of etcd's JSON gateway (``POST /v3/watch``, one JSON message per line):
wait until a key of a range changes, with a deadline; another thread may cut the wait short.
The watch starts at the current revision (docs/etcd.md, *Watches start now*)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import HTTPError, ReadTimeoutError

from conch.backends.base import Deadline
from conch.backends.etcd.errors import UNAUTHENTICATED, EtcdRequestFailed
from conch.errors import BackendUnavailable

_ENDED: dict[str, Any] = {"canceled": True}  # what the end of the stream reads as


class Watch:
    """A watch on a range of keys. One thread reads it; any may interrupt it."""

    def __init__(self, response: urllib3.BaseHTTPResponse, endpoint: str) -> None:
        conn = response.connection
        assert isinstance(conn, HTTPConnection) and conn.sock is not None  # a stream keeps one
        self._conn, self._sock, self._response = conn, conn.sock, response
        self._endpoint = endpoint
        self._buffer = b""
        self.revision = 0
        """The store revision when the watch was created: later changes are seen."""
        self.changed: set[bytes] = set()
        """The keys seen changed (deleted, for a watch of deletions), until cleared."""
        self._fired = False  # a change arrived and was not waited for yet
        self.ended = False
        """The stream ended (connection lost or interrupted) or etcd cancelled the watch."""

    def start(self, timeout: float) -> None:
        """Wait until etcd confirms the watch; raise BackendUnavailable."""
        deadline = Deadline(timeout)
        while not self.revision:
            result = self._next(deadline)
            if result is None or result is _ENDED:
                reason = "timed out" if result is None else "connection lost"
                raise BackendUnavailable(f"etcd at {self._endpoint} is unreachable ({reason})")
            if result.get("canceled"):  # refused: the gRPC error only in the reason
                reason = str(result.get("cancel_reason"))
                raise EtcdRequestFailed(f"etcd at {self._endpoint} refused a watch: {reason}",
                                        UNAUTHENTICATED if "Unauthenticated" in reason else -1)
            if result.get("created"):
                self.revision = int(result["header"]["revision"])

    def wait(self, deadline: Deadline) -> bool:
        """Block until a watched key changed, the stream ended or was interrupted (True:
        the caller reads again) or ``deadline`` passed (False). It returns True at once from
        then on, until :meth:`rearm`."""
        while not self._fired:
            result = self._next(deadline)
            if result is None:
                return False
            for event in result.get("events", []):
                self.changed.add(base64.b64decode(event["kv"]["key"]))
            # A cancelled watch (a compacted history) has ended too: the caller reads again.
            self.ended = bool(result.get("canceled"))
            self._fired = self.ended or bool(result.get("events"))
        return True

    def rearm(self) -> None:
        """Make :meth:`wait` wait for the next change (for a stream that lives on)."""
        self._fired = False

    def interrupt(self) -> None:
        """Make a :meth:`wait` in another thread return now (session lost or closed)."""
        with contextlib.suppress(OSError):  # already closed
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """End the stream (etcd cancels its watches when the connection closes)."""
        self._conn.close()

    def _next(self, deadline: Deadline) -> dict[str, Any] | None:
        """The next message's result; :data:`_ENDED` once the stream ended, None when the
        deadline passed."""
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                message = json.loads(line) if line.strip() else None
                if isinstance(message, dict):
                    return message.get("result", {})  # type: ignore[no-any-return]
                continue
            remaining = deadline.remaining()
            if remaining == 0:
                return None
            try:
                self._sock.settimeout(remaining)
                data = self._response.read1(65536)
            except (ReadTimeoutError, TimeoutError):
                continue  # the deadline check above ends the wait
            except (HTTPError, OSError):
                return _ENDED
            if not data:
                return _ENDED
            self._buffer += data
