"""A thin client for etcd v3's JSON gateway (``POST /v3/...``), over urllib3.

It speaks only etcd's documented gateway API (the gRPC messages as JSON: keys
and values base64, 64-bit integers as strings), and only the calls the lock
needs: transactions, leases, deletes and watches. Every failure becomes a
:class:`conch.BackendUnavailable` naming the endpoint, never the password
(:mod:`conch.backends.etcd.errors`).

* **Endpoints**: requests go to the current endpoint; a connection that cannot
  be opened moves to the next one. Nothing is retried once a request was sent.
* **TLS** (``etcd+https://``): every connection, watches included, uses one SSL
  context made by :meth:`Gateway.open` from the URL's files (:mod:`conch.backends.kit.tls`).
* **Auth**: with a user name, ``/v3/auth/authenticate`` gives a token sent as the
  ``Authorization`` header; an expired token is renewed once per request.
* **Watches**: one stream per wait, on a connection of its own
  (:mod:`conch.backends.etcd.watch`).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Sequence
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError

from conch.backends.etcd.errors import (
    FAILED_PRECONDITION,
    NOT_FOUND,
    UNAUTHENTICATED,
    Endpoint,
    EtcdRequestFailed,
    refusal,
    unreachable,
)
from conch.backends.etcd.watch import DeleteWatch, WatchRefused
from conch.backends.kit.tls import TLSFiles, client_context

Message = dict[str, Any]

_JSON = {"Content-Type": "application/json"}


def encode(data: bytes) -> str:
    """Bytes as the gateway's JSON carries them (base64)."""
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    """The bytes of a base64 field of a gateway message."""
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes here end in "/", never 0xff


class Gateway:
    """Requests to one etcd cluster through its JSON gateway. Thread-safe."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        connect_timeout: float,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
        tls_files: TLSFiles | None = None,
    ) -> None:
        self._endpoints = list(endpoints)
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._username = username
        self._password = password
        self._tls_files = tls_files
        self.ssl_context: ssl.SSLContext | None = None
        """The context of every connection (None: plain HTTP), made by :meth:`open`."""
        self._pools: list[urllib3.HTTPConnectionPool] = []
        self._current = 0
        self._auth_lock = threading.Lock()
        self._headers: dict[str, str] = dict(_JSON)

    def open(self) -> None:
        """Read the TLS files, if any, and make the connection pools: before any request."""
        if self._tls_files is not None:
            host, port = self._endpoints[0]
            self.ssl_context = client_context(self._tls_files, f"etcd at {host}:{port}")
        self._pools = self._new_pools()

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for a connection to open."""
        return self._connect_timeout

    def authenticate(self) -> None:
        """Get an auth token when the URL names a user (no-op otherwise or without auth)."""
        if self._username is None:
            return
        with self._auth_lock:
            try:
                # Without the old token: etcd refuses any request carrying an expired one.
                answer = self._post("/v3/auth/authenticate",
                                    {"name": self._username, "password": self._password or ""},
                                    headers=_JSON)
            except EtcdRequestFailed as exc:
                if exc.code == FAILED_PRECONDITION:  # auth not enabled: etcd's own client goes on
                    return
                raise EtcdRequestFailed(
                    f"etcd refused user {self._username!r}: {exc}", exc.code
                ) from None
            self._headers = {**_JSON, "Authorization": str(answer["token"])}

    def call(self, path: str, body: Message, timeout: float | None = None) -> Message:
        """POST ``body`` to ``path`` and return etcd's answer (a unary call)."""
        try:
            return self._post(path, body, timeout)
        except EtcdRequestFailed as exc:
            if exc.code != UNAUTHENTICATED or self._username is None:
                raise
        self.authenticate()  # the token expired (--auth-token-ttl): get a new one, once
        return self._post(path, body, timeout)

    def txn(self, compare: Sequence[Message], success: Sequence[Message],
            failure: Sequence[Message] = ()) -> Message:
        """An atomic transaction: ``success`` ops if every ``compare`` holds, else ``failure``."""
        return self.call("/v3/kv/txn",
                         {"compare": list(compare), "success": list(success),
                          "failure": list(failure)})

    def delete(self, key: bytes, timeout: float | None = None) -> int:
        """Delete ``key``; how many keys were deleted (0 when it was already gone)."""
        answer = self.call("/v3/kv/deleterange", {"key": encode(key)}, timeout)
        return int(answer.get("deleted", 0))

    def grant_lease(self, ttl: int) -> tuple[int, int]:
        """A new lease: its ID and the TTL etcd granted (it raises TTLs below its minimum)."""
        answer = self.call("/v3/lease/grant", {"TTL": ttl})
        return int(answer["ID"]), int(answer["TTL"])

    def keep_alive(self, lease_id: int, timeout: float) -> int:
        """Renew a lease once; its TTL, or 0 when the lease no longer exists."""
        # The gateway serves the keep-alive stream one message per request body.
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease_id)}, timeout)
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke_lease(self, lease_id: int, timeout: float | None = None) -> None:
        """Revoke a lease, deleting its keys (nothing happens when it is already gone)."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease_id)}, timeout)
        except EtcdRequestFailed as exc:
            if exc.code != NOT_FOUND:
                raise

    def lease_keys(self, lease_id: int, timeout: float) -> tuple[int, set[bytes]]:
        """The revision read and the keys attached to a lease (none once it expired)."""
        answer = self.call("/v3/lease/timetolive", {"ID": str(lease_id), "keys": True}, timeout)
        return int(answer["header"]["revision"]), {decode(key) for key in answer.get("keys", [])}

    def watch_deletes(self, keys: Sequence[bytes]) -> DeleteWatch:
        """A started watch on the deletion of ``keys`` from the current revision on."""
        try:
            return self._open_watch(keys)
        except WatchRefused as exc:
            refusal = str(exc)
        # A refused watch comes as a cancelled one, the gRPC error only in its text.
        code = UNAUTHENTICATED if "code = Unauthenticated" in refusal else -1
        if code != UNAUTHENTICATED or self._username is None:
            raise EtcdRequestFailed(refusal, code)
        self.authenticate()  # the token expired: get a new one, once
        return self._open_watch(keys)

    def _open_watch(self, keys: Sequence[bytes]) -> DeleteWatch:
        # The gateway decodes a stream of messages from the body: one create request per key.
        payload = "\n".join(
            json.dumps({"create_request": {"key": encode(key), "filters": ["NOPUT"]}})
            for key in keys
        ).encode()
        index = self._current
        host, port = self._endpoints[index]
        conn = HTTPConnection(host, port, timeout=self._connect_timeout) \
            if self.ssl_context is None else \
            HTTPSConnection(host, port, timeout=self._connect_timeout,
                            ssl_context=self.ssl_context)
        try:
            conn.request("POST", "/v3/watch", body=payload, headers=self._headers,
                         preload_content=False)
            response = conn.getresponse()
            if response.status != 200:
                raise refusal((host, port), response.status, response.read())
            watch = DeleteWatch(conn, response, keys, f"{host}:{port}")
            watch.start(self._timeout)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, HTTPError | OSError):
                self._current = (index + 1) % len(self._endpoints)
                raise unreachable((host, port), exc) from None
            raise
        return watch

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools:
            pool.close()

    def forget_connections(self) -> None:
        """In a forked child: open connections of our own, leaving the parent's alone."""
        self._pools = self._new_pools()
        self._auth_lock = threading.Lock()  # the parent may have held it while forking

    def _new_pools(self) -> list[urllib3.HTTPConnectionPool]:
        limits = urllib3.Timeout(connect=self._connect_timeout, read=self._timeout)
        if self.ssl_context is None:
            return [urllib3.HTTPConnectionPool(host, port, maxsize=16, block=False,
                                               retries=False, timeout=limits)
                    for host, port in self._endpoints]
        return [urllib3.HTTPSConnectionPool(host, port, maxsize=16, block=False, retries=False,
                                            timeout=limits, ssl_context=self.ssl_context)
                for host, port in self._endpoints]

    def _post(self, path: str, body: Message, timeout: float | None = None,
              headers: dict[str, str] | None = None) -> Message:
        payload = json.dumps(body).encode()
        read_timeout = self._timeout if timeout is None else timeout
        limits = urllib3.Timeout(connect=min(self._connect_timeout, read_timeout),
                                 read=read_timeout)
        start = self._current
        failure: BaseException | None = None
        for step in range(len(self._endpoints)):
            index = (start + step) % len(self._endpoints)
            try:
                response = self._pools[index].urlopen(
                    "POST", path, body=payload, headers=headers or self._headers, timeout=limits)
            except ConnectTimeoutError as exc:  # not sent: the next endpoint may answer
                failure = exc
                continue
            except (HTTPError, OSError) as exc:
                raise unreachable(self._endpoints[index], exc) from None
            self._current = index
            if response.status != 200:
                raise refusal(self._endpoints[index], response.status, response.data)
            answer: Message = json.loads(response.data)
            return answer
        assert failure is not None
        raise unreachable(self._endpoints[start], failure, every=len(self._endpoints) > 1)
