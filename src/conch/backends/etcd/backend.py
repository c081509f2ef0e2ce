"""``etcd[+https]://[user:password@]host:port[,host:port][/prefix][?options]``: locks in etcd v3.

Translation of the contract (the recipe of etcd's own ``concurrency.Mutex``):

* **session**: one lease per coordinator, renewed every TTL/3 and revoked by
  ``close()`` (:mod:`conch.backends.etcd.session`). Every key is attached to it,
  so a dead holder's locks are freed when its lease expires, not at once:
  ``session_bound`` is False (a SIGKILLed holder cannot revoke).
* **hold**: the key ``<prefix>/<sha256(name)>/<lease hex>-<n>``, unique per hold,
  so two lock objects of one coordinator queue like two processes. The holder
  is the name's key with the lowest create revision: first come, first served.
* **uncontended**: one transaction: "if nobody queues, put my key". When someone
  does and we may wait, the same transaction reads the last queued key (our
  predecessor) and puts ours behind it. A try-lock that fails writes nothing.
* **wait**: a waiter watches the deletion of its predecessor and of its own key
  (the latter: its lease expired), and reads the queue again if the watch
  started after its last read, so no deletion is missed: a release wakes
  exactly the next waiter and nothing polls. Woken, it checks that no older key
  is left.
* **timed wait**: the watch is read with the remaining time; on timeout or any
  error the waiter deletes its own key, so nothing stays queued.
* **introspection** (``conch show``, ``conch break``): :mod:`conch.backends.etcd.inspection`.
* **fencing token**: the hold key's create revision. etcd's revision strictly
  increases and is stored with the data, so it survives client and server
  restarts; a wiped data directory restarts it at 1.

Options: ``ttl`` (whole seconds, default 10; etcd raises it to its minimum,
usually 2), ``connect_timeout`` (default 3 s), ``timeout`` (per request, default
5 s). The URL's path is the key prefix (default ``/conch/locks``). With
``user:password``, requests carry an etcd auth token. ``etcd+https://`` speaks TLS,
checking the server's certificate against ``ssl_ca`` (default: the system's CAs) and
presenting ``ssl_cert``/``ssl_key`` when given (etcd's ``--client-cert-auth``).
"""

from __future__ import annotations

import hashlib
import time

from conch.backends.base import Backend, Deadline, LockHandle, LossCallback
from conch.backends.etcd import inspection
from conch.backends.etcd.client import Gateway, Message, decode, encode, prefix_end
from conch.backends.etcd.errors import NOT_FOUND, EtcdRequestFailed, Unreachable, diagnosed
from conch.backends.etcd.session import EtcdSession, Hold, Lease
from conch.backends.etcd.watch import DeleteWatch
from conch.backends.kit.tls import OptionNames, tls_from_url
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, InvalidURL
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

DEFAULT_PORT = 2379
DEFAULT_PREFIX = "/conch/locks"
DEFAULT_TTL = 10
# conch's ssl_* names (docs/etcd.md says why); conch.compat.tooz translates etcd3gw's.
TLS_OPTIONS = OptionNames(ca="ssl_ca", cert="ssl_cert", key="ssl_key")
# Between attempts to reach etcd while a waiter's lease may still live.
_RECONNECT_PAUSE = 0.25


class _Requeue(Exception):
    """The wait's lease is gone: queue again with the session's new lease."""


class EtcdBackend(Backend):
    """Locks in an etcd v3 cluster, through its JSON gateway."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=True, notify=True,
        shared_locks=False, distributed=True, introspection=True, breakable=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        url.options({"ttl", "connect_timeout", "timeout", *TLS_OPTIONS})
        ttl = _whole_seconds(url, "ttl", DEFAULT_TTL)
        if url.password is not None and not url.username:
            raise InvalidURL(f"a password needs a user name (user:password@host): {url}")
        tls_files = tls_from_url(url, TLS_OPTIONS, url.scheme == "etcd+https",
                                 "an etcd+https:// URL")
        endpoints = [(host or "127.0.0.1", port or DEFAULT_PORT) for host, port in url.hosts]
        self.prefix = (url.path.rstrip("/") or DEFAULT_PREFIX).encode()
        self.gateway = Gateway(
            endpoints or [("127.0.0.1", DEFAULT_PORT)],
            connect_timeout=url.float_option("connect_timeout", 3.0),
            timeout=url.float_option("timeout", 5.0),
            username=url.username,
            password=url.password,
            tls_files=tls_files,
        )
        self.session = EtcdSession(self.gateway, member_id, ttl)

    def connect(self) -> None:
        try:
            self.gateway.open()
            self.gateway.authenticate()
            # Granting a lease needs no permission: read the prefix so that missing
            # credentials or rights fail here, not at the first acquire.
            start = self.prefix + b"/"
            self.gateway.call("/v3/kv/range", {"key": encode(start), "limit": "1",
                                               "range_end": encode(prefix_end(start)),
                                               "count_only": True})
            self.session.open()
        except Unreachable as exc:
            self.gateway.close()
            raise diagnosed(exc, self.gateway.ssl_context, self.gateway.connect_timeout) from None
        except BackendUnavailable:
            self.gateway.close()
            raise

    def close(self) -> None:
        self.session.close()
        self.gateway.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return _EtcdLock(self, key, on_lost)

    def queue(self, key: bytes) -> bytes:
        """The key prefix of lock ``key``'s queue: 160 bits of its SHA-256, so names up
        to 64 KiB make keys of one short, fixed size."""
        return self.prefix + b"/" + hashlib.sha256(key).hexdigest()[:40].encode() + b"/"

    def describe_lock(self, key: bytes) -> LockInfo:
        return inspection.describe(self.gateway, self.queue(key), key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return inspection.held_locks(self.gateway, self.prefix)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        return inspection.break_hold(self.gateway, self.queue(key), key, token)


class _EtcdLock(LockHandle):
    def __init__(self, backend: EtcdBackend, key: bytes, on_lost: LossCallback) -> None:
        self._gateway = backend.gateway
        self._session = backend.session
        self._stamp = HolderStamp(key, backend.member_id)  # each key's value, for `conch show`
        self._on_lost = on_lost
        self._queue = backend.queue(key)
        self._hold: Hold | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        session = self._session
        while True:
            lease = session.lease()
            key = lease.new_key(self._queue)
            try:
                token = self._take(lease, key, deadline)
            except _Requeue:
                session.forget(key)
                continue
            except BaseException:
                session.forget(key)
                raise
            if token is None:
                return None
            hold = Hold(lease, key, token)
            if session.track(hold, self._on_lost):
                self._hold = hold
                return token
            session.forget(key)  # the lease was lost while we acquired: start over

    def release(self) -> None:
        hold, self._hold = self._hold, None
        assert hold is not None
        self._session.release(hold)

    def _take(self, lease: Lease, key: bytes, deadline: Deadline) -> int | None:
        """Queue ``key`` and wait for its turn: its token, or None (nothing left queued)."""
        put = {"request_put": {"key": encode(key), "value": encode(self._stamp.stamp()),
                               "lease": str(lease.id)}}
        may_wait = not deadline.expired()
        try:
            # One round trip: take the lock if nobody queues; else join the queue (if we
            # may wait), reading the last key queued before ours: our predecessor.
            answer = self._gateway.txn(
                compare=[{"key": encode(self._queue), "range_end": encode(prefix_end(self._queue)),
                          "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                success=[put],
                failure=[self._predecessor_range(), put] if may_wait else [],
            )
        except EtcdRequestFailed as exc:
            if exc.code == NOT_FOUND:  # our lease expired in etcd before the heartbeat noticed
                self._session.lease_lost(lease, str(exc))
                raise _Requeue from None
            raise
        revision = int(answer["header"]["revision"])
        if answer.get("succeeded"):
            return revision
        if not may_wait:
            return None
        predecessor = _first_key(answer["responses"][0])
        return self._wait_turn(lease, key, revision, predecessor, revision, deadline)

    def _wait_turn(self, lease: Lease, key: bytes, own_revision: int,
                   predecessor: bytes | None, revision: int, deadline: Deadline) -> int | None:
        """Wait until no key older than ours is queued; None when the deadline passed.

        ``predecessor`` is the key queued just before ours, as read at ``revision``.
        """
        session = self._session
        watch: DeleteWatch | None = None
        stale = False  # the queue must be read again before waiting
        try:
            while True:
                if not session.is_current(lease):
                    raise _Requeue
                try:
                    if stale:
                        predecessor, revision = self._check_turn(lease, key, own_revision)
                        stale = False
                    if predecessor is None:
                        return own_revision
                    if deadline.expired():
                        session.forget(key)
                        return None
                    if watch is not None and watch.keys[0] != predecessor:
                        session.unwatch(lease, watch)
                        watch = None
                    if watch is None:
                        watch = session.watch(lease, (predecessor, key))
                    stale = True
                    if watch.revision > revision:
                        continue  # a deletion between our read and the watch went unseen
                    if not watch.wait(deadline):
                        session.forget(key)
                        return None
                    session.unwatch(lease, watch)  # a stream that fired is spent
                    watch = None
                except EtcdRequestFailed:
                    raise
                except BackendUnavailable:
                    # etcd unreachable: keep our place while the lease may live; once the
                    # heartbeat gives the lease up, requeueing grants anew (or raises).
                    remaining = deadline.remaining()
                    if remaining == 0:
                        raise
                    time.sleep(_RECONNECT_PAUSE if remaining is None
                               else min(_RECONNECT_PAUSE, remaining))
                    stale = True
        finally:
            if watch is not None:
                session.unwatch(lease, watch)

    def _check_turn(self, lease: Lease, key: bytes, own_revision: int) -> tuple[bytes | None, int]:
        """Our predecessor now (None: our turn) and the revision read."""
        answer = self._gateway.txn(
            compare=[{"key": encode(key), "target": "CREATE", "result": "EQUAL",
                      "create_revision": str(own_revision)}],
            success=[self._predecessor_range(below=own_revision)],
        )
        if not answer.get("succeeded"):
            # Our key is gone: deleted by hand, or with our lease, which the next put
            # with it then finds missing (and the session replaces).
            raise _Requeue
        return _first_key(answer["responses"][0]), int(answer["header"]["revision"])

    def _predecessor_range(self, below: int | None = None) -> Message:
        """The queued key with the largest create revision (below ``below``)."""
        request: Message = {
            "key": encode(self._queue), "range_end": encode(prefix_end(self._queue)),
            "sort_order": "DESCEND", "sort_target": "CREATE", "limit": "1", "keys_only": True,
        }
        if below is not None:
            request["max_create_revision"] = str(below - 1)
        return {"request_range": request}


def _first_key(response: Message) -> bytes | None:
    kvs = response.get("response_range", {}).get("kvs", [])
    return decode(kvs[0]["key"]) if kvs else None


def _whole_seconds(url: BackendURL, name: str, default: int) -> int:
    raw = url.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidURL(f"option {name} must be a whole number of seconds >= 1, got {raw!r}")
    return int(raw)
