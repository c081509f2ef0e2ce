"""The ``etcd://`` lock handle: a key per hold or waiter in the name's queue, on the session's
lease; the oldest key holds. One transaction takes a free lock or joins the queue; a waiter
watches its predecessor's deletion (docs/etcd.md, *How it works*)."""

from __future__ import annotations

import time

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.etcd.client import Message, decode, encode, keys_under
from conch.backends.etcd.errors import NOT_FOUND, EtcdRequestFailed
from conch.backends.etcd.session import EtcdSession, Hold, Lease
from conch.backends.etcd.watch import Watch
from conch.errors import BackendUnavailable
from conch.introspection import HolderStamp

# Between attempts to reach etcd while a waiter's lease may still live.
_RECONNECT_PAUSE = 0.25


class _Requeue(Exception):
    """The wait's lease or key is gone: queue again with the session's current lease."""


class EtcdLock(LockHandle):
    """One lock object of a name whose keys are under ``queue``."""

    def __init__(self, session: EtcdSession, queue: bytes, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._session = session
        self._queue = queue
        self._stamp = stamp  # each key's value, for `conch show`
        self._on_lost = on_lost
        self._hold: Hold | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        session = self._session
        while True:
            lease = session.lease()
            key = lease.new_key(self._queue)
            try:
                token = self._take(lease, key, deadline)
            except _Requeue:
                session.delete(key, quiet=True)
                continue
            except BaseException:
                session.delete(key, quiet=True)
                raise
            if token is None:
                return None
            hold = Hold(lease, key, token)
            if session.track(hold, self._on_lost):
                self._hold = hold
                return token
            session.delete(key, quiet=True)  # the lease was lost while we acquired: start over

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
            # may wait), reading the last key queued before ours (our predecessor) and how
            # many there are.
            answer = self._session.gateway.txn(
                compare=[keys_under(self._queue, target="CREATE", result="EQUAL",
                                    create_revision="0")],
                success=[put], failure=[*self._queue_reads(), put] if may_wait else [])
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
        return self._wait_turn(lease, key, revision, _turn(answer), deadline)

    def _wait_turn(self, lease: Lease, key: bytes, own_revision: int,
                   turn: tuple[bytes | None, bool], deadline: Deadline) -> int | None:
        """Wait until no key older than ours is queued; None when the deadline passed.
        ``turn``: the key queued just before ours and whether it is the only one, as read
        at ``own_revision``."""
        session = self._session
        predecessor, next_in_line = turn
        revision = own_revision
        watch: Watch | None = None
        stale = False  # the queue must be read again before waiting
        try:
            while True:
                if not session.is_current(lease):
                    raise _Requeue
                try:
                    if stale:
                        (predecessor, next_in_line), revision = self._check_turn(key,
                                                                                  own_revision)
                        stale = False
                    if predecessor is None:
                        return own_revision
                    if deadline.expired():
                        session.delete(key, quiet=True)
                        return None
                    if watch is not None and watch.keys[0] != predecessor:
                        session.unwatch(lease, watch)
                        watch = None
                    if watch is None:  # the predecessor's deletion, or ours (lease expired)
                        watch = session.watch(lease, (predecessor, key))
                    stale = True
                    if watch.revision > revision:
                        continue  # a deletion between our read and the watch went unseen
                    if not watch.wait(deadline):
                        session.delete(key, quiet=True)
                        return None
                    if key in watch.deleted:
                        raise _Requeue  # our lease expired, or someone deleted our key
                    if next_in_line and predecessor in watch.deleted:
                        # Nothing older than our key was left but the holder, now gone: no
                        # newer key can be ahead of ours, so the lock is ours without a read.
                        return own_revision
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

    def _check_turn(self, key: bytes,
                    own_revision: int) -> tuple[tuple[bytes | None, bool], int]:
        """Our predecessor now (None: our turn), whether it is the only key ahead, and the
        revision read."""
        answer = self._session.gateway.txn(
            compare=[{"key": encode(key), "target": "CREATE", "result": "EQUAL",
                      "create_revision": str(own_revision)}],
            success=self._queue_reads(below=own_revision))
        if not answer.get("succeeded"):
            # Our key is gone: deleted by hand, or with our lease, which the next put
            # with it then finds missing (and the session replaces).
            raise _Requeue
        return _turn(answer), int(answer["header"]["revision"])

    def _queue_reads(self, below: int | None = None) -> list[Message]:
        """Read the queued key with the largest create revision and count the queued keys
        (those created before revision ``below``)."""
        older = {} if below is None else {"max_create_revision": str(below - 1)}
        return [{"request_range": keys_under(self._queue, sort_order="DESCEND", limit="1",
                                             sort_target="CREATE", keys_only=True, **older)},
                {"request_range": keys_under(self._queue, count_only=True, **older)}]


def _turn(answer: Message) -> tuple[bytes | None, bool]:
    """The predecessor that :meth:`EtcdLock._queue_reads` found, and whether it is alone."""
    last, counted = (response.get("response_range", {}) for response in answer["responses"][:2])
    kvs = last.get("kvs", [])
    return (decode(kvs[0]["key"]) if kvs else None), int(counted.get("count", "0")) == 1
