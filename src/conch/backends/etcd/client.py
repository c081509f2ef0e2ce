"""A client of etcd v3's JSON gateway over urllib3: the calls the lock needs, and watch
streams read with a deadline (docs/etcd.md, *The code*, *Client choice*)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError

from conch.backends.base import Deadline
from conch.backends.etcd import errors
from conch.backends.etcd.errors import UNAUTHENTICATED, EtcdRequestFailed
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.tls import TLSFiles, client_context
from conch.errors import BackendUnavailable
from conch.url import BackendURL

Message = dict[str, Any]
T = TypeVar("T")

DEFAULT_PORT = 2379
_JSON = {"Content-Type": "application/json"}


def encode(data: bytes) -> str:
    """Bytes as the gateway's JSON carries them (base64)."""
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    """The bytes of a base64 field of a gateway message."""
    return base64.b64decode(text)


def created(keys: Message, revision: object = 0, result: str = "EQUAL") -> Message:
    """A comparison of the create revision of ``keys`` (a key or a range; 0: none exists)."""
    return {**keys, "target": "CREATE", "result": result, "create_revision": str(revision)}


def keys_under(prefix: bytes, **fields: object) -> Message:
    """A range (or compare) over every key starting with ``prefix``, with ``fields``."""
    end = prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes here end in "/", never 0xff
    return {"key": encode(prefix), "range_end": encode(end), **fields}


class Watch:
    """A watch, confirmed by etcd within ``timeout``. One thread reads it; any may
    interrupt it."""

    def __init__(self, response: urllib3.BaseHTTPResponse, endpoint: str,
                 timeout: float) -> None:
        conn = response.connection
        assert isinstance(conn, HTTPConnection) and conn.sock is not None  # a stream keeps one
        self._sock, self._response = conn.sock, response
        self._buffer = b""
        self._changed: set[bytes] = set()
        self.ended = False  # the stream ended, was interrupted, or etcd cancelled the watch
        self.revision = 0  # the store revision at creation: later changes are seen
        try:
            self._start(endpoint, Deadline(timeout))
        except BaseException:
            self.close()
            raise

    def wait(self, deadline: Deadline) -> bool:
        """True once a watched key changed or the stream ended (at once until
        :meth:`take_changes`), False when ``deadline`` passed."""
        while not (self.ended or self._changed):
            result = self._next(deadline)
            if result is None:
                return not deadline.expired()
            # A cancelled watch (a compacted history) has ended too: the caller reads again.
            self.ended = bool(result.get("canceled"))
            self._changed.update(decode(event["kv"]["key"])
                                 for event in result.get("events", []))
        return True

    def take_changes(self) -> set[bytes]:
        """The keys seen changed since the last call: :meth:`wait` then waits for more."""
        changed, self._changed = self._changed, set()
        return changed

    def interrupt(self) -> None:
        """Make a :meth:`wait` in another thread return now (session lost or closed)."""
        with contextlib.suppress(OSError):  # already closed
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """End the stream (etcd cancels its watches when the connection closes)."""
        self.ended = True
        self._response.close()

    def _start(self, endpoint: str, deadline: Deadline) -> None:
        while not self.revision:
            result = self._next(deadline)
            if result is None:
                reason = "timed out" if deadline.expired() else "connection lost"
                raise BackendUnavailable(f"etcd at {endpoint} is unreachable ({reason})")
            if result.get("canceled"):  # refused: the gRPC error only in the reason
                reason = str(result.get("cancel_reason"))
                raise EtcdRequestFailed(f"etcd at {endpoint} refused a watch: {reason}",
                                        UNAUTHENTICATED if "Unauthenticated" in reason else -1)
            if result.get("created"):
                self.revision = int(result["header"]["revision"])

    def _next(self, deadline: Deadline) -> Message | None:
        """The next message's result; None once the stream ended or ``deadline`` passed."""
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                message = json.loads(line) if line.strip() else None
                if isinstance(message, dict):
                    return message.get("result", {})  # type: ignore[no-any-return]
                continue
            remaining = deadline.remaining()
            if remaining == 0 or self.ended:
                return None
            try:
                self._sock.settimeout(remaining)
                data = self._response.read1(65536)
            except (HTTPError, OSError):  # a read timeout: urllib3 closed the stream too
                data = b""
            self.ended = not data
            self._buffer += data


class Gateway:
    """Requests to one etcd cluster: to the current endpoint, moving to the next when a
    connection cannot be opened (nothing is retried once sent). Thread-safe."""

    def __init__(self, url: BackendURL, tls_files: TLSFiles | None) -> None:
        self._url = url
        self.endpoints = [(host or "127.0.0.1", port or DEFAULT_PORT)
                          for host, port in url.hosts] or [("127.0.0.1", DEFAULT_PORT)]
        self.connect_timeout = url.float_option("connect_timeout", 3.0)
        self._timeout = url.float_option("timeout", 5.0)
        self._tls_files = tls_files
        self.ssl_context: ssl.SSLContext | None = None  # None: plain HTTP
        self._pools: list[urllib3.HTTPConnectionPool] = []
        self._current = 0
        self._headers = _JSON

    def open(self) -> None:
        """Read the TLS files, if any, and make the connection pools: before any request."""
        if self._tls_files is not None:
            host, port = self.endpoints[0]
            self.ssl_context = client_context(self._tls_files, f"etcd at {host}:{port}")
        self.forget_parent()
        forget_in_child(self)

    def authenticate(self) -> None:
        """Get an auth token when the URL names a user (no-op otherwise or without auth)."""
        if self._url.username is None:
            return
        try:  # without the old token: etcd refuses any request carrying an expired one
            answer = self._send("/v3/auth/authenticate", {
                "name": self._url.username, "password": self._url.password or ""}, _JSON).json()
        except EtcdRequestFailed as exc:
            if exc.code == errors.FAILED_PRECONDITION:  # auth off: etcd's client goes on
                return
            raise EtcdRequestFailed(f"etcd refused user {self._url.username!r}: {exc}",
                                    exc.code) from None
        self._headers = {**_JSON, "Authorization": str(answer["token"])}

    def call(self, path: str, body: Message, timeout: float | None = None) -> Message:
        """POST ``body`` to ``path`` and return etcd's answer."""
        return self._with_token(lambda: self._send(path, body, self._headers, timeout).json())

    def txn(self, compare: Sequence[Message], success: Sequence[Message],
            failure: Sequence[Message] = ()) -> Message:
        """An atomic transaction: ``success`` ops if every ``compare`` holds, else ``failure``."""
        return self.call("/v3/kv/txn", {"compare": list(compare), "success": list(success),
                                        "failure": list(failure)})

    def delete(self, key: bytes, timeout: float | None = None) -> int:
        """Delete ``key``; how many keys were deleted (0 when it was already gone)."""
        return int(self.call("/v3/kv/deleterange", {"key": encode(key)}, timeout)
                   .get("deleted", 0))

    def lease_ttl(self, lease_id: int, timeout: float | None = None) -> tuple[int, int, set[bytes]]:
        """The revision read, a lease's seconds left (-1: gone) and its keys."""
        answer = self.call("/v3/lease/timetolive", {"ID": str(lease_id), "keys": True}, timeout)
        return (int(answer["header"]["revision"]), int(answer.get("TTL", "-1")),
                {decode(key) for key in answer.get("keys", [])})

    def watch(self, prefix: bytes, deletes_only: bool) -> Watch:
        """A started watch on the keys under ``prefix``, from the current revision on."""
        request = {"create_request": keys_under(
            prefix, filters=["NOPUT"] if deletes_only else [])}

        def open_watch() -> Watch:
            response = self._send("/v3/watch", request, self._headers, stream=True)
            host, port = self.endpoints[self._current]
            return Watch(response, f"{host}:{port}", self._timeout)
        return self._with_token(open_watch)

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools:
            pool.close()

    def forget_parent(self) -> None:
        """New pools (in a forked child: leaving the parent's connections alone)."""
        limits = urllib3.Timeout(connect=self.connect_timeout, read=self._timeout)
        self._pools = [
            urllib3.HTTPConnectionPool(host, port, maxsize=16, block=False, retries=False,
                                       timeout=limits) if self.ssl_context is None else
            urllib3.HTTPSConnectionPool(host, port, maxsize=16, block=False, retries=False,
                                        timeout=limits, ssl_context=self.ssl_context)
            for host, port in self.endpoints]

    def _with_token(self, request: Callable[[], T]) -> T:
        """``request()``, again with a new auth token if etcd said it expired."""
        try:
            return request()
        except EtcdRequestFailed as exc:
            if exc.code != UNAUTHENTICATED or self._url.username is None:
                raise
        self.authenticate()
        return request()

    def _send(self, path: str, body: Message, headers: dict[str, str],
              timeout: float | None = None, stream: bool = False) -> urllib3.BaseHTTPResponse:
        """The answer of the current endpoint, or of the next ones while a connection
        cannot be opened; ``stream``: left unread, its connection out of the pool."""
        read_timeout = self._timeout if timeout is None else timeout
        limits = urllib3.Timeout(connect=min(self.connect_timeout, read_timeout),
                                 read=read_timeout)
        payload, start = json.dumps(body).encode(), self._current
        failure: BaseException | None = None
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            try:
                response = self._pools[index].urlopen(
                    "POST", path, body=payload, headers=headers, timeout=limits,
                    preload_content=not stream, release_conn=not stream)
            except ConnectTimeoutError as exc:  # not sent: the next endpoint may answer
                failure = exc
                continue
            except (HTTPError, OSError) as exc:
                raise errors.unreachable(self._url, self.endpoints[index], exc) from None
            self._current = index
            if response.status != 200:
                raise errors.refusal(self._url, self.endpoints[index], response.status,
                                     response.data)
            return response
        assert failure is not None
        raise errors.unreachable(self._url, self.endpoints[start], failure,
                                 every=len(self.endpoints) > 1)
