"""A client of etcd v3's JSON gateway over urllib3: requests, watches read with a deadline,
and etcd's failures as :class:`conch.BackendUnavailable` (docs/etcd.md, *The code*)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import urllib3
from urllib3 import exceptions
from urllib3.connection import HTTPConnection

from conch.backends.base import Deadline
from conch.backends.kit.errors import scrub, unavailable
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.tls import TLSFiles, client_context
from conch.backends.kit.tls_diagnosis import explain
from conch.errors import BackendUnavailable
from conch.url import BackendURL

Message = dict[str, Any]
Endpoint = tuple[str, int]
T = TypeVar("T")

DEFAULT_PORT = 2379
# gRPC codes in the gateway's ``code``; CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE: transient.
NOT_FOUND, FAILED_PRECONDITION, UNAUTHENTICATED = 5, 9, 16
_TRANSIENT = frozenset({1, 4, 14})
# etcd 3.4's gateway refuses a client certificate with a CommonName once auth is on.
_CN_REFUSED = "CommonName of client sending a request against gateway"


class Unreachable(BackendUnavailable):
    """No answer; ``tls_suspect``: the endpoint, when TLS may be the cause."""

    def __init__(self, text: str, tls_suspect: Endpoint | None) -> None:
        super().__init__(text)
        self.tls_suspect = tls_suspect


class EtcdRequestFailed(BackendUnavailable):
    """etcd refused a request; ``code`` is its gRPC status code."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


def encode(data: bytes) -> str:
    """Bytes as the gateway's JSON carries them (base64)."""
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    """The bytes of a base64 field of a gateway message."""
    return base64.b64decode(text)


def created(keys: Message | bytes, revision: object = 0, result: str = "EQUAL") -> Message:
    """A comparison of the create revision of ``keys`` (a key or a range; 0: none exists)."""
    keys = {"key": encode(keys)} if isinstance(keys, bytes) else keys
    return {**keys, "target": "CREATE", "result": result, "create_revision": str(revision)}


def keys_under(prefix: bytes, end: bytes = b"", **fields: object) -> Message:
    """A range (or compare) of the keys from ``prefix`` to ``end`` (default: all under it)."""
    end = end or prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes here end in "/", never 0xff
    return {"key": encode(prefix), "range_end": encode(end), **fields}


class Watch:
    """A watch, confirmed by etcd within ``timeout``; one thread reads it, any interrupts it."""

    def __init__(self, response: urllib3.BaseHTTPResponse, timeout: float) -> None:
        conn = response.connection
        assert isinstance(conn, HTTPConnection) and conn.sock is not None  # a stream keeps one
        self._sock, self._response = conn.sock, response
        self._buffer = b""
        self._changed: set[bytes] = set()
        self.ended = False  # the stream ended, was interrupted, or etcd cancelled the watch
        self.revision = 0  # the store revision at creation: later changes are seen
        try:
            self._start(f"{conn.host}:{conn.port}", Deadline(timeout))
        except BaseException:
            self.close()
            raise

    def wait(self, deadline: Deadline) -> bool:
        """True once a watched key changed (until :meth:`take_changes`) or the stream ended."""
        while not (self.ended or self._changed):
            result = self._next(deadline)
            if result is None:
                return not deadline.expired()
            # A cancelled watch (a compacted history) has ended too: the caller reads again.
            self.ended = bool(result.get("canceled"))
            self._changed.update(decode(event["kv"]["key"]) for event in result.get("events", []))
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
            except (exceptions.HTTPError, OSError):  # a read timeout: urllib3 closed it too
                data = b""
            self.ended = not data
            self._buffer += data


class Gateway:
    """Requests to one etcd cluster, at the next endpoint while one cannot be connected to."""

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
        self._headers: dict[str, str] = {}

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
                "name": self._url.username, "password": self._url.password or ""}, {}).json()
        except EtcdRequestFailed as exc:
            if exc.code == FAILED_PRECONDITION:  # auth off: etcd's client goes on
                return
            raise EtcdRequestFailed(f"etcd refused user {self._url.username!r}: {exc}",
                                    exc.code) from None
        self._headers = {"Authorization": str(answer["token"])}

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
        return int(self.call("/v3/kv/deleterange", {"key": encode(key)}, timeout).get("deleted", 0))

    def lease_ttl(self, lease_id: int, timeout: float | None = None) -> tuple[int, int, set[bytes]]:
        """The revision read, a lease's seconds left (-1: gone) and its keys."""
        answer = self.call("/v3/lease/timetolive", {"ID": str(lease_id), "keys": True}, timeout)
        return (int(answer["header"]["revision"]), int(answer.get("TTL", "-1")),
                {decode(key) for key in answer.get("keys", [])})

    def watch(self, prefix: bytes, deletes_only: bool) -> Watch:
        """A started watch on the keys under ``prefix``, from the current revision on."""
        request = {"create_request": keys_under(
            prefix, filters=["NOPUT"] if deletes_only else [])}
        return self._with_token(lambda: Watch(
            self._send("/v3/watch", request, self._headers, stream=True), self._timeout))

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools:
            pool.close()

    def forget_parent(self) -> None:
        """New pools (in a forked child: leaving the parent's connections alone)."""
        tls: Message = {} if self.ssl_context is None else {"ssl_context": self.ssl_context}
        pool_class = urllib3.HTTPConnectionPool if not tls else urllib3.HTTPSConnectionPool
        self._pools = [pool_class(host, port, maxsize=16, block=False, retries=False, **tls)
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
        """The answer of the first endpoint that can be connected to (``stream``: unread)."""
        read_timeout = self._timeout if timeout is None else timeout
        limits = urllib3.Timeout(connect=min(self.connect_timeout, read_timeout),
                                 read=read_timeout)
        start, failure = self._current, None
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            try:
                response = self._pools[index].request(
                    "POST", path, json=body, headers=headers, timeout=limits,
                    preload_content=not stream, release_conn=not stream)
            except exceptions.ConnectTimeoutError as exc:  # not sent: the next may answer
                failure = exc
                continue
            except (exceptions.HTTPError, OSError) as exc:
                raise self._unreachable(self.endpoints[index], exc) from None
            self._current = index
            if response.status != 200:
                raise self._refusal(self.endpoints[index], response.status, response.data)
            return response
        assert failure is not None
        raise self._unreachable(self.endpoints[start], failure, every=len(self.endpoints) > 1)

    def _unreachable(self, endpoint: Endpoint, exc: BaseException,
                     every: bool = False) -> Unreachable:
        """The error for urllib3's failure ``exc`` at ``endpoint`` (or at every endpoint)."""
        tls_problem = explain(exc)
        if tls_problem is not None:
            reason = tls_problem
        elif isinstance(exc, exceptions.NewConnectionError):
            reason = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
        elif isinstance(exc, exceptions.TimeoutError | TimeoutError):
            reason = "timed out"
        elif isinstance(exc, exceptions.ProtocolError | ConnectionError):
            reason = "connection lost"
        else:
            reason = type(exc).__name__
        where = "every endpoint" if every else f"{endpoint[0]}:{endpoint[1]}"
        suspect = tls_problem or isinstance(exc, exceptions.SSLError | exceptions.ProtocolError)
        return Unreachable(scrub(f"etcd at {where} is unreachable ({reason})", self._url),
                           endpoint if suspect and not every else None)

    def _refusal(self, endpoint: Endpoint, status: int, data: bytes) -> BackendUnavailable:
        """The error for an HTTP answer other than 200."""
        where = f"etcd at {endpoint[0]}:{endpoint[1]}"
        try:
            answer = json.loads(data)
            message, code = str(answer.get("message") or answer["error"]), int(answer["code"])
        except (ValueError, KeyError, TypeError):
            text = data.decode(errors="replace").strip()[:200]
            if _CN_REFUSED in text:
                text += (" (etcd's JSON gateway refuses a client certificate with a CommonName "
                         "when auth is on: use one without a CN; the user comes from "
                         "user:password@)")
            return unavailable(self._url, f"{where} is unavailable (HTTP {status}"
                                          f"{': ' + text if text else ''})")
        if code in _TRANSIENT:
            return unavailable(self._url, f"{where} is unavailable ({message})")
        return EtcdRequestFailed(scrub(f"{where}: {message}", self._url), code)
