"""One watch stream of etcd's JSON gateway (``POST /v3/watch``, one JSON message per line):
wait until a watched key changes (is deleted, for a lock's watch), with a deadline; another
thread may cut the wait short. The watches start at the current revision (docs/etcd.md,
*Watches start now*)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections.abc import Sequence
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import HTTPError, ReadTimeoutError

from conch.backends.base import Deadline
from conch.backends.etcd.errors import UNAUTHENTICATED, EtcdRequestFailed
from conch.errors import BackendUnavailable


class Watch:
    """A watch on some keys (or a prefix). One thread reads it; any may interrupt it."""

    def __init__(self, response: urllib3.BaseHTTPResponse, keys: Sequence[bytes],
                 endpoint: str) -> None:
        self.keys = tuple(keys)
        self.revision = 0
        """The store revision when the first watch was created: later deletions are seen."""
        conn = response.connection
        assert isinstance(conn, HTTPConnection) and conn.sock is not None  # a stream keeps one
        self._conn, self._sock = conn, conn.sock
        self._response = response
        self._endpoint = endpoint
        self._buffer = b""
        self.deleted: set[bytes] = set()
        """The watched keys seen deleted."""
        self.changed: set[bytes] = set()
        """The watched keys seen written or deleted."""
        self._fired = False  # a change arrived while the watches were being created
        self.ended = False
        """The stream ended (connection lost or interrupted) or etcd cancelled the watch."""

    def start(self, timeout: float) -> None:
        """Wait until etcd confirms the first key's watch; raise BackendUnavailable.

        The gateway may stop reading the request body once it has answered (Go's HTTP/1
        server), so the later keys' watches are a bonus (see docs/etcd.md, *Watches*)."""
        deadline = Deadline(timeout)
        pending = 1
        while pending:
            line = self._line(deadline)
            if not line:
                reason = "timed out" if line is None else "connection lost"
                raise BackendUnavailable(f"etcd at {self._endpoint} is unreachable ({reason})")
            result = _result(line)
            if result.get("created"):
                if result.get("canceled"):  # refused: the gRPC error only in the reason
                    reason = str(result.get("cancel_reason"))
                    raise EtcdRequestFailed(f"etcd at {self._endpoint} refused a watch: {reason}",
                                            UNAUTHENTICATED if "Unauthenticated" in reason else -1)
                self.revision = max(self.revision, int(result["header"]["revision"]))
                pending -= 1
            elif self._changed(result):
                self._fired = True

    def wait(self, deadline: Deadline) -> bool:
        """Block until a watched key changed, the stream ended or was interrupted (True:
        the caller reads again) or ``deadline`` passed (False). It returns True at once from
        then on, until :meth:`rearm`."""
        while not self._fired:
            line = self._line(deadline)
            if line is None:
                return False
            self.ended = not line
            self._fired = self.ended or self._changed(_result(line))
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

    def _changed(self, result: dict[str, Any]) -> bool:
        """Note the changes in ``result``; True if it has events, or if etcd cancelled the
        watch (a compacted history; the stream has ended): the caller reads the state again."""
        for event in result.get("events", []):
            key = base64.b64decode(event["kv"]["key"])
            self.changed.add(key)
            if event.get("type") == "DELETE":
                self.deleted.add(key)
        self.ended = bool(result.get("canceled"))
        return bool(result.get("events")) or self.ended

    def _line(self, deadline: Deadline) -> bytes | None:
        """The next message; ``b""`` once the stream ended, None when the deadline passed."""
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                if line.strip():
                    return line
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
                return b""
            if not data:
                return b""
            self._buffer += data


def _result(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    result: dict[str, Any] = message.get("result", {}) if isinstance(message, dict) else {}
    return result
