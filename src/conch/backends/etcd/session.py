"""The liveness of one etcd coordinator: its lease, the heartbeat renewing it, its holds.

A coordinator has one lease at a time (never one per lock or per attempt, which
would leave a lease behind each time). Every key its locks write is attached to
it, so when the coordinator dies etcd deletes them after the lease's TTL.

* **renewal**: a keep-alive every TTL/3. etcd expires a lease TTL seconds after
  the last renewal it received, hence at the earliest TTL after we *sent* it;
  once renewals have failed until the next one would come too late, the lease
  is given up while its holders can still be told before etcd frees their locks.
* **loss**: a keep-alive answered with TTL 0 (the lease is gone), the failures
  above, or a put refused for want of the lease lose every hold of the lease
  and wake its waiters; the next acquire gets a new lease. The old one is revoked
  once etcd answers, so its keys never outlive the loss by a TTL.
* **deleted keys**: after each renewal the keys still attached to the lease are
  read, and a hold whose key someone deleted (``etcdctl del``) is lost.
* **clean-up**: a key that could not be deleted (etcd unreachable) is deleted by
  a later beat; ``close()`` revokes the lease, which deletes every key of it.
* **fork**: a child shares its parent's sockets and lease, and has no heartbeat
  thread: it forgets them (never closing, deleting or revoking the parent's) and
  grants a lease of its own when it first needs one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time
import weakref

from conch import metrics
from conch.backends.base import LossCallback
from conch.backends.etcd.client import Gateway
from conch.backends.etcd.watch import DeleteWatch
from conch.backends.kit.session import Heartbeat, Holds
from conch.errors import BackendUnavailable, LockLost, NotStarted

log = logging.getLogger("conch")

_open_sessions: weakref.WeakSet[EtcdSession] = weakref.WeakSet()


@dataclasses.dataclass(frozen=True, eq=False)
class Hold:
    """One hold: its key (attached to ``lease``) and that key's create revision."""

    lease: Lease
    key: bytes
    token: int
    pid: int = dataclasses.field(default_factory=os.getpid)  # a forked child's is its parent's


@dataclasses.dataclass(eq=False)
class Lease:
    """One session lease and what depends on it."""

    id: int
    ttl: int
    renewed_at: float  # monotonic time the last successful grant/keep-alive was *sent*
    holds: Holds[Hold] = dataclasses.field(default_factory=Holds)
    watches: set[DeleteWatch] = dataclasses.field(default_factory=set)
    serial: itertools.count[int] = dataclasses.field(default_factory=itertools.count)

    def new_key(self, queue: bytes) -> bytes:
        """A key in ``queue`` that no other hold ever uses."""
        return queue + f"{self.id:016x}-{next(self.serial)}".encode()


class EtcdSession:
    """The lease of one coordinator, shared by all its lock handles. Thread-safe."""

    def __init__(self, gateway: Gateway, member_id: str, ttl: int) -> None:
        self.gateway = gateway
        self._member_id = member_id
        self._ttl = ttl
        self._mutex = threading.Lock()  # guards _lease, _closed and the stale sets
        self._lease: Lease | None = None
        self._closed = False
        self._heartbeat: Heartbeat | None = None
        self._stale_keys: set[bytes] = set()
        self._stale_leases: set[int] = set()

    def open(self) -> None:
        """Grant the first lease and start renewing; raise BackendUnavailable."""
        self.lease()
        _open_sessions.add(self)

    def close(self) -> None:
        """Stop renewing, wake the waiters and revoke the lease (best effort, bounded)."""
        watches: list[DeleteWatch] = []
        _open_sessions.discard(self)
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            lease, self._lease = self._lease, None
            if lease is not None:
                self._stale_leases.add(lease.id)  # revoking deletes every key of the session
                watches = list(lease.watches)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for watch in watches:
            watch.interrupt()
        self._remove_stale(timeout=self.gateway.connect_timeout)

    def lease(self) -> Lease:
        """The session's lease, granting a new one if the last was lost."""
        with self._mutex:  # one grant for every thread that needs it
            if self._closed:
                raise NotStarted("the coordinator was stopped")
            if self._lease is None:
                self._lease = self._grant()
                if self._heartbeat is None:  # first lease, or the first in a forked child
                    self._heartbeat = Heartbeat(f"conch-etcd-{self._member_id}",
                                                self._lease.ttl / 3, self._beat)
                    self._heartbeat.start()
            return self._lease

    def is_current(self, lease: Lease) -> bool:
        """True while ``lease`` is the session's lease; raise NotStarted once closed."""
        if self._closed:
            raise NotStarted("the coordinator was stopped while a lock was waiting")
        return self._lease is lease

    def lease_lost(self, lease: Lease, reason: str) -> None:
        """Lose every hold of ``lease`` (once), wake its waiters, revoke it when possible."""
        with self._mutex:
            if self._lease is not lease:
                return
            self._lease = None
            self._stale_leases.add(lease.id)
            watches = list(lease.watches)
        log.warning("etcd lease %x of %s lost: %s", lease.id, self._member_id, reason)
        lease.holds.lose_all(reason)
        for watch in watches:
            watch.interrupt()

    def track(self, hold: Hold, on_lost: LossCallback) -> bool:
        """Keep ``hold`` alive with its lease; False when that lease was lost meanwhile."""
        with self._mutex:
            if self._lease is not hold.lease:
                return False
            hold.lease.holds.add(hold, on_lost)
            return True

    def watch(self, lease: Lease, keys: tuple[bytes, ...]) -> DeleteWatch:
        """A started watch on the deletion of ``keys``, cut short if ``lease`` is lost."""
        watch = self.gateway.watch_deletes(keys)
        with self._mutex:
            lease.watches.add(watch)
            current = self._lease is lease
        if not current:
            watch.interrupt()
        return watch

    def unwatch(self, lease: Lease, watch: DeleteWatch) -> None:
        """Close a watch of :meth:`watch`."""
        with self._mutex:
            lease.watches.discard(watch)
        watch.close()

    def release(self, hold: Hold) -> None:
        """Stop keeping ``hold`` alive and delete its key (wakes the next waiter).

        Raises :class:`LockLost` when the key was already gone: its lease expired
        unnoticed (a process paused past the TTL) or the lock was broken.
        """
        hold.lease.holds.discard(hold)
        if hold.pid == os.getpid() and not self.delete(hold.key):  # never a parent's key
            raise LockLost(
                "its key was gone before the release: the lease expired (was the process "
                "paused longer than the TTL?) or the lock was broken"
            )

    def delete(self, key: bytes) -> int:
        """Delete a hold's key (0: it was gone); if etcd cannot be reached, a later beat
        does, and raise."""
        try:
            return self.gateway.delete(key)
        except BackendUnavailable:
            with self._mutex:
                if not self._closed:
                    self._stale_keys.add(key)
            raise

    def forget(self, key: bytes) -> None:
        """Delete a waiter's key, best effort (a later beat retries)."""
        with contextlib.suppress(BackendUnavailable):
            self.delete(key)

    def _grant(self) -> Lease:
        sent = time.monotonic()
        lease_id, ttl = self.gateway.grant_lease(self._ttl)
        return Lease(lease_id, ttl, sent)

    def _beat(self) -> None:
        assert self._heartbeat is not None
        interval = self._heartbeat.interval
        lease = self._lease
        if lease is not None:
            self._keep_alive(lease, interval)
        self._remove_stale(timeout=interval / 2)

    def _keep_alive(self, lease: Lease, interval: float) -> None:
        sent = time.monotonic()
        try:
            ttl = self.gateway.keep_alive(lease.id, timeout=interval / 2)
        except BackendUnavailable as exc:
            metrics.record_renewals("etcd", 0, len(lease.holds.snapshot()))
            if time.monotonic() + interval >= lease.renewed_at + lease.ttl:
                unrenewed = time.monotonic() - lease.renewed_at
                self.lease_lost(lease, f"not renewed for {unrenewed:.1f} s of its "
                                       f"{lease.ttl} s TTL ({exc})")
            else:
                log.info("etcd lease %x not renewed yet: %s", lease.id, exc)
            return
        if ttl <= 0:
            self.lease_lost(lease, "the lease expired in etcd")
            return
        lease.renewed_at = sent
        holds = lease.holds.snapshot()
        metrics.record_renewals("etcd", len(holds))
        if holds:
            self._check_keys(lease, holds, interval / 2)

    def _check_keys(self, lease: Lease, holds: list[Hold], timeout: float) -> None:
        try:
            revision, keys = self.gateway.lease_keys(lease.id, timeout)
        except BackendUnavailable:
            return  # the next beat checks again
        for hold in holds:
            if hold.token <= revision and hold.key not in keys:  # not one put after the read
                lease.holds.lose(hold, "its key was deleted in etcd")

    def _remove_stale(self, timeout: float) -> None:
        """Delete the keys and revoke the leases that could not be removed earlier."""
        try:
            for key in list(self._stale_keys):
                self.gateway.delete(key, timeout)
                self._stale_keys.discard(key)
            for lease_id in list(self._stale_leases):
                self.gateway.revoke_lease(lease_id, timeout)
                self._stale_leases.discard(lease_id)
        except BackendUnavailable as exc:
            log.info("etcd clean-up postponed: %s", exc)

    def _forget_parent(self) -> None:
        """In a forked child: the parent's lease, holds, heartbeat and sockets are not ours."""
        self._mutex = threading.Lock()  # the parent may have held it while forking
        self._lease = None
        self._heartbeat = None
        self._stale_keys = set()
        self._stale_leases = set()
        self.gateway.forget_connections()


def _forget_parents_in_child() -> None:
    for session in list(_open_sessions):
        session._forget_parent()


os.register_at_fork(after_in_child=_forget_parents_in_child)
