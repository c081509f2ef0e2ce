"""One watch stream of etcd's JSON gateway: wait until a key is deleted.

The gateway serves ``POST /v3/watch`` as a never-ending chunked response, one
JSON message per line; the request body may carry several create requests,
one per key. A stream is read with the wait's remaining time as the socket
timeout and can be cut short from another thread by shutting its socket down.

The watches start at the store's current revision, never at an older one:
etcd serves a watch that starts in the past ("unsynced") from a loop that runs
every 100 ms (mvcc ``syncWatchersLoop``), which would delay every hand-off made
while other clients write. The caller compares :attr:`DeleteWatch.revision`
with the revision it last read and reads again when the watch started later.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Sequence
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import HTTPError, ReadTimeoutError

from conch.backends.base import Deadline
from conch.errors import BackendUnavailable


class WatchRefused(BackendUnavailable):
    """etcd cancelled a watch as it created it; the text holds etcd's reason."""


class DeleteWatch:
    """A watch on the deletion of some keys. One thread reads it; any may interrupt it."""

    def __init__(self, conn: HTTPConnection, response: urllib3.BaseHTTPResponse,
                 keys: Sequence[bytes], endpoint: str) -> None:
        self.keys = tuple(keys)
        self.revision = 0
        """The store revision when the watches were created: deletions after it are seen."""
        self._conn = conn
        self._sock = conn.sock
        self._response = response
        self._endpoint = endpoint
        self._buffer = b""
        self._fired = False  # a deletion arrived while the watches were being created

    def start(self, timeout: float) -> None:
        """Wait until etcd confirms every watch; raise WatchRefused or BackendUnavailable."""
        deadline = Deadline(timeout)
        pending = len(self.keys)
        while pending:
            line = self._line(deadline)
            if not line:
                reason = "timed out" if line is None else "connection lost"
                raise BackendUnavailable(f"etcd at {self._endpoint} is unreachable ({reason})")
            result = _result(line)
            if result.get("created"):
                if result.get("canceled"):
                    raise WatchRefused(f"etcd at {self._endpoint} refused a watch: "
                                       f"{result.get('cancel_reason')}")
                self.revision = max(self.revision, int(result["header"]["revision"]))
                pending -= 1
            elif self._changed(result):
                self._fired = True

    def wait(self, deadline: Deadline) -> bool:
        """Block until a watched key is deleted (True) or ``deadline`` passes (False).

        Also True when the stream ended or was interrupted: the caller reads again.
        """
        if self._fired:
            return True
        while True:
            line = self._line(deadline)
            if line is None:
                return False
            if not line or self._changed(_result(line)):
                return True

    def interrupt(self) -> None:
        """Make a :meth:`wait` in another thread return now (session lost or closed)."""
        with contextlib.suppress(OSError):  # already closed
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """End the stream (etcd cancels its watches when the connection closes)."""
        self._conn.close()

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

    @staticmethod
    def _changed(result: dict[str, Any]) -> bool:
        # A compacted history cancels the watch: the caller reads the state again.
        return bool(result.get("events") or result.get("canceled"))


def _result(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    result: dict[str, Any] = message.get("result", {}) if isinstance(message, dict) else {}
    return result
