"""``memcached://host:port``: TTL locks on one memcached 1.6 server.

This module is the backend: the coordinator's pool, its holds and their renewal,
error handling, and the lock handle. The steps each call runs on the server are
:mod:`conch.backends.memcached.steps`; connections and keys,
:mod:`conch.backends.memcached.client`.

Translation of the contract:

* **hold**: ``add`` of the name's key (``conch:<sha256 hex>``), whose value is
  random to this hold, with expiry ``?ttl=`` (whole seconds, default 10).
  ``add`` stores only when the key is absent: one holder at a time.
* **liveness**: the coordinator's one :class:`~conch.backends.kit.session.Heartbeat`
  reads every held key with one ``gets`` and extends each still holding our
  value with ``cas`` (only if unchanged since the read) every ``(ttl - 1) / 3``
  s: memcached's clock ticks once a second, so a key set to live ``ttl`` s is
  only sure to live ``ttl - 1``. A key found gone or holding another value is
  reported lost; when renewals fail, each hold is reported lost at the last
  failed renewal before that lease would end. A crashed holder's locks are
  free after the TTL: the backend is not session-bound.
* **release** is atomic: ``gets`` the key; if it holds our value, delete it with
  the meta protocol's compare-and-delete (``md <key> C<cas>``), which deletes
  nothing if the key changed since the read. A hold that expired and was taken
  by another process is never deleted by its late release (tooz's driver reads,
  then deletes: its own comment admits it may delete another holder's lock).
* **wait**: memcached cannot notify (``notify`` is False). A release wakes the
  waiters of this process at once; other processes poll with a back-off capped
  at 10 ms (:mod:`conch.backends.memcached.waiting`). A timed wait never sleeps
  past its deadline.
* **fencing token**: ``incr`` of the name's counter key (``...:token``), right
  after the ``add`` succeeded, so successive holders get increasing tokens. A
  counter found missing (first use, eviction, restart) is first created with
  the wall clock in microseconds: tokens stay above those handed out before, as
  long as the name got fewer acquisitions than microseconds passed since its
  counter was created, and the clock of the host re-creating it is not behind
  by more than that margin.
* **restart grace**: a restart (or ``flush_all``) empties the server: every
  lock is free at once, while its holder learns of the loss only at its next
  renewal. So the server's state carries an epoch key (``conch:epoch``, no
  expiry): an acquirer whose counter is missing and finds no epoch knows the
  server lost its state, creates a grace key that expires after ``ttl`` s, then
  the epoch, and (like every acquirer who sees the grace key) frees what it
  took and grants nothing until the grace key expires. By then every earlier
  holder has been told its lock was lost (if all clients use the same ``ttl``).
  A fresh server, too, grants its first lock one TTL after first use.
* **introspection** (``conch show``, ``conch break``): :mod:`conch.backends.memcached.inspection`.
* **lost replies**: an acquire keeps its hold value across retries; a retry that
  finds the key holding its own value holds the lock rather than orphaning it.

Error handling: each call waits at most ``?timeout=`` for its reply
(connecting: ``?connect_timeout=``; both 2 s by default; renewals at most one
renewal interval), then raises :class:`~conch.BackendUnavailable`. An acquire
or release is retried once on a fresh connection: both are idempotent. An
acquire that fails leaves nothing held: it frees what it may have taken or,
when the server is unreachable, that key expires within the TTL.

Memcached is a cache: a held key must never be evicted. Give the server memory
to spare, or run it with ``-M`` (refuse to store rather than evict; an acquire
then fails with :class:`~conch.BackendUnavailable`). An evicted counter is
re-created from the clock, as after a restart. See ``docs/memcached.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from pymemcache.client.base import Client  # type: ignore[import-untyped]
from pymemcache.exceptions import MemcacheError  # type: ignore[import-untyped]

from conch import metrics
from conch.backends.base import Backend, Deadline, LockHandle, LossCallback
from conch.backends.kit.session import Heartbeat, Holds
from conch.backends.memcached import inspection, steps
from conch.backends.memcached.client import (
    TRANSIENT,
    ConnectionPool,
    LockKeys,
    MemcachedOptions,
    lock_keys,
)
from conch.backends.memcached.waiting import LOCAL_RELEASES, Backoff
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, LockLost
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

log = logging.getLogger("conch")
T = TypeVar("T")


@dataclasses.dataclass(eq=False)
class MemcachedHold:
    """A lock this coordinator holds, kept alive by its heartbeat."""

    keys: LockKeys
    value: bytes
    valid_until: float
    """Monotonic time by which the server frees it unless a renewal succeeds."""


class MemcachedBackend(Backend):
    """Locks on one memcached server (see the module documentation)."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=False, notify=False,
        shared_locks=False, distributed=True, introspection=True, breakable=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        self.options = MemcachedOptions.from_url(url)
        self.holds: Holds[MemcachedHold] = Holds()
        self.pool = ConnectionPool(self.options)
        self.renewal_interval = self.options.lease / 3
        self._heartbeat: Heartbeat | None = None
        self._renewer: Client | None = None

    def connect(self) -> None:
        self.pool.check_server()
        # The heartbeat's own connection: a renewal waits no longer than one interval.
        self._renewer = self.pool.new_client(min(self.options.timeout, self.renewal_interval))
        self._heartbeat = Heartbeat("conch-memcached-renewal", self.renewal_interval, self.renew)
        self._heartbeat.start()

    def close(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
        self.holds.lose_all("the coordinator was stopped")
        if self._renewer is not None:
            self._renewer.close()
        self.pool.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return _MemcachedLock(self, lock_keys(key), HolderStamp(key, self.member_id), on_lost)

    def describe_lock(self, key: bytes) -> LockInfo:
        return self._inspect(lambda client: inspection.describe(
            client, lock_keys(key), key)[0])

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return self._inspect(inspection.held_locks)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        return self._inspect(lambda client: inspection.break_hold(
            client, lock_keys(key), key, token))

    def _inspect(self, look: Callable[[Client], T]) -> T:
        try:
            with self.pool.client() as client:
                return look(client)
        except (*TRANSIENT, MemcacheError) as exc:
            raise BackendUnavailable(self.pool.describe(exc)) from None

    def signal_key(self, keys: LockKeys) -> bytes:
        """The key of this lock among the process's local releases (per server)."""
        return f"{self.options.where} ".encode() + keys.holder

    def new_hold_value(self, stamp: HolderStamp) -> bytes:
        """A value no other hold ever has, then the hold's stamp (for ``conch show``)."""
        return secrets.token_hex(16).encode() + b" " + stamp.stamp()

    def try_acquire(self, keys: LockKeys, value: bytes) -> tuple[int | None, float]:
        """One attempt to hold ``keys`` with ``value``: ``(token, 0)`` or, when busy,
        ``(None, seconds to pause at least)``. Repeating it with the same ``value`` is safe."""
        try:
            return self.pool.run(lambda client, retried: steps.take(
                client, keys, value, self.options, retried))
        except TRANSIENT as exc:
            # Twice unreachable: freeing would fail alike. What the add may have
            # stored expires within the TTL.
            raise BackendUnavailable(self.pool.describe(exc)) from None
        except BaseException as exc:
            self._abandon(keys, value)
            if isinstance(exc, MemcacheError):
                raise BackendUnavailable(self.pool.describe(exc)) from None
            raise

    def keep(
        self, keys: LockKeys, value: bytes, sent: float, on_lost: LossCallback
    ) -> MemcachedHold:
        """Start renewing a hold acquired by a request sent at monotonic time ``sent``."""
        hold = MemcachedHold(keys, value, sent + self.options.lease)
        self.holds.add(hold, on_lost)
        return hold

    def release(self, hold: MemcachedHold) -> None:
        """Stop renewing ``hold``, free its lock if still ours, and wake local waiters."""
        self.holds.discard(hold)

        def free(client: Client, retried: bool) -> bool:
            # After a lost reply the key may be gone because our own delete ran.
            return steps.free(client, hold.keys, hold.value) or retried

        try:
            if self.pool.closed:  # granted as the coordinator stopped: free it all the same
                with self._client_even_closed() as client:
                    freed = steps.free(client, hold.keys, hold.value)
            else:
                freed = self.pool.run(free)
        except (*TRANSIENT, MemcacheError) as exc:
            raise BackendUnavailable(self.pool.describe(exc)) from None
        finally:
            LOCAL_RELEASES.released(self.signal_key(hold.keys))
        if not freed:
            raise LockLost(f"lock key {hold.keys.holder.decode()} had expired or changed "
                           "holder before its release")

    def renew(self) -> None:
        """Extend every hold still ours; report those found gone, or about to expire."""
        holds, renewer = self.holds.snapshot(), self._renewer
        if not holds or renewer is None:
            return
        sent = time.monotonic()
        try:
            found = renewer.gets_many([hold.keys.holder for hold in holds])
            for hold in holds:
                if steps.extend(renewer, hold.keys.holder, hold.value,
                                          found.get(hold.keys.holder), self.options.ttl):
                    hold.valid_until = sent + self.options.lease
                    metrics.record_renewals("memcached", 1)
                else:
                    self.holds.lose(hold, "its TTL ran out, it was broken (conch break), or "
                                    "another holder took it")
        except (*TRANSIENT, MemcacheError) as exc:
            renewer.close()
            why = self.pool.describe(exc)
            log.warning("renewing %d memcached lock(s) failed: %s", len(holds), why)
            metrics.record_renewals("memcached", 0, len(holds))
            # The next renewal would come too late for these: the server frees them first.
            deadline = time.monotonic() + self.renewal_interval
            for hold in holds:
                if hold.valid_until <= deadline:
                    self.holds.lose(hold, f"renewals failed until its TTL ran out: {why}")

    def _abandon(self, keys: LockKeys, value: bytes) -> None:
        """Best effort: free a lock an acquire that is failing may have taken."""
        try:
            with self._client_even_closed() as client:
                steps.free(client, keys, value)
        except (*TRANSIENT, MemcacheError, BackendUnavailable):
            log.warning("could not free lock key %s after a failed acquire; it expires "
                        "within the TTL", keys.holder.decode())

    @contextlib.contextmanager
    def _client_even_closed(self) -> Iterator[Client]:
        """A pooled client, or once the pool is closed a client of its own: an acquire
        that got a hold as the coordinator stopped must still free it."""
        if not self.pool.closed:
            with self.pool.client() as client:
                yield client
            return
        client = self.pool.new_client()
        try:
            yield client
        finally:
            client.close()


class _MemcachedLock(LockHandle):
    def __init__(self, backend: MemcachedBackend, keys: LockKeys, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._backend = backend
        self._keys = keys
        self._stamp = stamp
        self._on_lost = on_lost
        self._hold: MemcachedHold | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        backend = self._backend
        backoff = Backoff()
        with LOCAL_RELEASES.watching(backend.signal_key(self._keys)) as watch:
            while True:
                # A new value per attempt (a busy answer means the last one holds
                # nothing), so that the stamp tells when the hold began.
                value = backend.new_hold_value(self._stamp)
                seen = watch.releases
                sent = time.monotonic()
                token, at_least = backend.try_acquire(self._keys, value)
                if token is not None:
                    self._hold = backend.keep(self._keys, value, sent, self._on_lost)
                    return token
                remaining = deadline.remaining()
                if remaining == 0:
                    return None
                pause = max(backoff.next_pause(), at_least)
                watch.wait(seen, pause if remaining is None else min(pause, remaining))

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._backend.release(hold)
