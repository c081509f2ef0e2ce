"""One etcd coordinator's lease for all its holds and group entries, renewed by a heartbeat,
given up before etcd can expire it, revoked on close (docs/etcd.md, *Failures*)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time
from collections.abc import Sequence

from conch import metrics
from conch.backends.base import LossCallback
from conch.backends.etcd.client import NOT_FOUND, EtcdRequestFailed, Gateway, Message, Watch
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.session import Heartbeat, Holds
from conch.errors import BackendUnavailable, LockLost, NotStarted

log = logging.getLogger("conch")


@dataclasses.dataclass(frozen=True, eq=False)
class Hold:
    """A hold or group entry: its key on ``lease``, the revision that wrote it (the token)."""

    lease: Lease
    key: bytes
    token: int
    pid: int = dataclasses.field(default_factory=os.getpid)  # a forked child's is its parent's


@dataclasses.dataclass(eq=False)
class Lease:
    """A lease, its holds and entries, and the watches ``parked`` for a queue's next wait."""

    id: int
    ttl: int
    renewed_at: float  # monotonic time the last successful grant/keep-alive was *sent*
    holds: Holds[Hold] = dataclasses.field(default_factory=Holds)
    entries: Holds[Hold] = dataclasses.field(default_factory=Holds)
    parked: dict[bytes, Watch] = dataclasses.field(default_factory=dict)
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
        self._closed = False
        self.forget_parent()
        forget_in_child(self)

    def forget_parent(self) -> None:
        """In a forked child: the parent's lease, holds and heartbeat are not ours."""
        self._mutex = threading.Lock()  # guards _lease, _closed, the stale sets, the watches
        self._lease: Lease | None = None
        self._watches: set[Watch] = set()  # cut short at a loss; the ended ones pruned
        self._heartbeat: Heartbeat | None = None
        self._stale_keys: set[bytes] = set()
        self._stale_leases: set[int] = set()

    def close(self) -> None:
        """Stop renewing, wake the waiters and revoke the lease (best effort, bounded)."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            lease, self._lease = self._lease, None
            if lease is not None:
                self._stale_leases.add(lease.id)  # revoking deletes every key of the session
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self._end_watches(lease, interrupt=True)
        self._remove_stale(timeout=self.gateway.connect_timeout)

    def lease(self) -> Lease:
        """The session's lease, granting a new one if the last was lost."""
        with self._mutex:  # one grant for every thread that needs it
            if self._closed:
                raise NotStarted("the coordinator was stopped")
            if self._lease is None:
                sent = time.monotonic()
                # etcd raises a TTL below its minimum: the answer has the TTL granted
                answer = self.gateway.call("/v3/lease/grant", {"TTL": self._ttl})
                self._lease = Lease(int(answer["ID"]), int(answer["TTL"]), renewed_at=sent)
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
        log.warning("etcd lease %x of %s lost: %s", lease.id, self._member_id, reason)
        lease.holds.lose_all(reason)
        lease.entries.lose_all(reason)
        self._end_watches(lease, interrupt=True)

    def track(self, hold: Hold, on_lost: LossCallback, entry: bool = False) -> bool:
        """Keep ``hold`` (a group ``entry``) alive; False if its lease was lost meanwhile."""
        with self._mutex:
            if self._lease is not hold.lease:
                return False
            (hold.lease.entries if entry else hold.lease.holds).add(hold, on_lost)
            return True

    def write_with(self, lease: Lease, compare: Sequence[Message], success: Sequence[Message],
                   failure: Sequence[Message] = ()) -> Message | None:
        """A transaction putting on ``lease``; None if etcd forgot it (then it is lost)."""
        try:
            return self.gateway.txn(compare, success, failure)
        except EtcdRequestFailed as exc:
            if exc.code != NOT_FOUND:
                raise
            self.lease_lost(lease, str(exc))
            return None

    def watch(self, prefix: bytes, lease: Lease | None = None) -> Watch:
        """A watch on ``prefix`` (only deletions for a hold on ``lease``), cut short at a loss."""
        watch = self.gateway.watch(prefix, deletes_only=lease is not None)
        with self._mutex:
            self._watches = {other for other in self._watches if not other.ended} | {watch}
            cut = self._closed or (lease is not None and self._lease is not lease)
        if cut:
            watch.interrupt()
        return watch

    def park_watch(self, lease: Lease, queue: bytes, watch: Watch | None) -> None:
        """Keep a watch of :meth:`watch` for the next wait in ``queue``, until the next beat."""
        if watch is None:
            return
        with self._mutex:
            kept = (not watch.ended and self._lease is lease
                    and lease.parked.setdefault(queue, watch) is watch)
        if not kept:
            watch.close()

    def reuse_watch(self, lease: Lease, queue: bytes) -> Watch | None:
        """The watch that :meth:`park_watch` kept for ``queue``, with no change pending."""
        with self._mutex:
            watch = lease.parked.pop(queue, None)
        if watch is not None:
            watch.take_changes()  # changes before the caller's next read: moot
        return watch

    def release(self, hold: Hold) -> None:
        """Stop keeping ``hold`` alive and delete its key; LockLost if it was gone."""
        hold.lease.holds.discard(hold)
        if hold.pid == os.getpid() and not self.delete(hold.key):  # never a parent's key
            raise LockLost(
                "its key was gone before the release: the lease expired (was the process "
                "paused longer than the TTL?) or the lock was broken")

    def delete(self, key: bytes, quiet: bool = False) -> int:
        """Delete a key (0: it was gone), else a later beat does (raising unless ``quiet``)."""
        try:
            return self.gateway.delete(key)
        except BackendUnavailable:
            with self._mutex:
                if not self._closed:
                    self._stale_keys.add(key)
            if not quiet:
                raise
            return 0

    def _beat(self) -> None:
        assert self._heartbeat is not None
        interval = self._heartbeat.interval
        lease = self._lease
        if lease is not None:
            self._keep_alive(lease, interval)
            self._end_watches(lease)
        self._remove_stale(timeout=interval / 2)

    def _keep_alive(self, lease: Lease, interval: float) -> None:
        sent = time.monotonic()
        try:  # the gateway serves the keep-alive stream one message per request
            ttl = int(self.gateway.call("/v3/lease/keepalive", {"ID": str(lease.id)},
                                        interval / 2).get("result", {}).get("TTL", 0))
        except BackendUnavailable as exc:
            metrics.record_renewals("etcd", 0, len(lease.holds.snapshot()))
            # etcd expires it ttl after the last renewal sent at the earliest: tell holders first.
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
        holds, entries = lease.holds.snapshot(), lease.entries.snapshot()
        metrics.record_renewals("etcd", len(holds))
        if not holds and not entries:
            return
        with contextlib.suppress(BackendUnavailable):  # else the next beat checks again
            revision, _, keys = self.gateway.lease_ttl(lease.id, interval / 2)
            # A key deleted by hand (etcdctl del, conch break), not one put after the read.
            for registry, kept in ((lease.holds, holds), (lease.entries, entries)):
                for hold in kept:
                    if hold.token <= revision and hold.key not in keys:
                        registry.lose(hold, "its key was deleted in etcd")

    def _end_watches(self, lease: Lease | None, interrupt: bool = False) -> None:
        """Close ``lease``'s parked watches (``interrupt``: wake the waits on every watch)."""
        with self._mutex:
            parked, woken = {}, list(self._watches) if interrupt else []
            if lease is not None:
                parked, lease.parked = lease.parked, {}
        for watch in woken:
            watch.interrupt()
        for watch in parked.values():
            watch.close()

    def _remove_stale(self, timeout: float) -> None:
        """Delete the keys and revoke the leases that could not be removed earlier."""
        try:
            for key in list(self._stale_keys):
                self.gateway.delete(key, timeout)
                self._stale_keys.discard(key)
            for lease_id in list(self._stale_leases):
                try:  # revoking deletes the lease's keys
                    self.gateway.call("/v3/lease/revoke", {"ID": str(lease_id)}, timeout)
                except EtcdRequestFailed as exc:
                    if exc.code != NOT_FOUND:  # else it is gone already
                        raise
                self._stale_leases.discard(lease_id)
        except BackendUnavailable as exc:
            log.info("etcd clean-up postponed: %s", exc)
