"""``etcd://`` lock handles: a key per hold or waiter in the name's queue, on the session's
lease; the oldest keys hold, waiters follow deletions on a watch (docs/etcd.md)."""

from __future__ import annotations

import time

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.etcd.client import (
    EtcdRequestFailed,
    Message,
    Watch,
    created,
    decode,
    encode,
    keys_under,
)
from conch.backends.etcd.session import EtcdSession, Hold, Lease
from conch.errors import BackendUnavailable, LimitMismatch
from conch.introspection import HolderStamp

# Between attempts to reach etcd while a waiter's lease may still live.
_RECONNECT_PAUSE = 0.25
# The start of a shared hold's key in the queue; an exclusive one's is its lease id in hex.
SHARED, _AFTER_EXCLUSIVE = b"shared-", b"g"

Turn = tuple[set[bytes], bool]  # the keys ahead of ours a read found; whether that is all


class _Requeue(Exception):
    """The wait's lease or key is gone: queue again with the session's current lease."""


class EtcdLock(LockHandle):
    """A hold of the keys under ``queue``; a ``shared`` one waits only for exclusive keys."""

    tries_in_queue = False  # a try that finds keys queued still queues to read its place
    room = 0  # how many keys may be ahead of a holder's
    keys_read = 64  # the most keys ahead one read names (0: all); the rest are read later

    def __init__(self, session: EtcdSession, queue: bytes, stamp: HolderStamp,
                 on_lost: LossCallback, shared: bool = False) -> None:
        self._session = session
        self._queue = queue
        self._stamp = stamp  # the keys' value, for `conch show`
        self._on_lost = on_lost
        self._hold: Hold | None = None
        # The keys that keep this kind of hold waiting, and where its own keys are named.
        self._ahead = keys_under(queue, queue + _AFTER_EXCLUSIVE if shared else b"")
        self._key_prefix = queue + SHARED if shared else queue

    def acquire(self, deadline: Deadline) -> int | None:
        session = self._session
        while True:
            lease = session.lease()
            key = lease.new_key(self._key_prefix)
            # A watch kept from an earlier wait sees every deletion after our read.
            watch = session.reuse_watch(lease, self._queue)
            try:
                token = self._take(lease, key, watch, deadline)
            except BaseException as exc:
                session.delete(key, quiet=True)
                if isinstance(exc, _Requeue):
                    continue
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

    def _take(self, lease: Lease, key: bytes, watch: Watch | None,
              deadline: Deadline) -> int | None:
        """Queue ``key`` and wait for its turn: its token, or None (nothing left queued)."""
        put = {"request_put": {"key": encode(key), "value": encode(self._stamp.stamp()),
                               "lease": str(lease.id)}}
        may_wait = self.tries_in_queue or not deadline.expired()
        # One round trip: take a free lock, else queue (if we may wait) and read those ahead.
        answer = self._session.write_with(
            lease, compare=[created(self._ahead)],
            success=[put], failure=[self._queue_read(), put] if may_wait else [])
        if answer is None:
            raise _Requeue
        revision = int(answer["header"]["revision"])
        if answer.get("succeeded") or not may_wait:
            self._session.park_watch(lease, self._queue, watch)
            return revision if answer.get("succeeded") else None
        return self._wait_turn(lease, key, revision, self._turn(answer), watch, deadline)

    def _wait_turn(self, lease: Lease, key: bytes, own_revision: int, turn: Turn,
                   watch: Watch | None, deadline: Deadline) -> int | None:
        """Wait until few enough keys are ahead of ours (``turn``); None at the deadline."""
        session = self._session
        (ahead, complete), revision = turn, own_revision
        stale = False  # the queue must be read again before waiting
        try:
            while True:
                if not session.is_current(lease):
                    raise _Requeue
                try:
                    if stale:
                        (ahead, complete), revision = self._check_turn(key, own_revision)
                        stale = False
                    if len(ahead) <= self.room:
                        if complete:  # keys queued later are behind ours: it is our turn
                            token: int | None = own_revision
                            break
                        stale = True  # the keys the read left out are still ahead
                        continue
                    if deadline.expired() or not (watch is None or watch.wait(deadline)):
                        session.delete(key, quiet=True)
                        token = None
                        break
                    if watch is None:
                        watch = session.watch(self._queue, lease)
                        stale = watch.revision > revision  # a deletion went unseen between
                        continue
                    changed = watch.take_changes()
                    if key in changed:
                        raise _Requeue  # our lease expired, or someone deleted our key
                    ahead -= changed
                    if watch.ended:  # the stream is spent: a new one, after a new read
                        watch.close()
                        watch, stale = None, True
                except EtcdRequestFailed:
                    raise
                except BackendUnavailable:
                    # Keep our place while the lease may live (then requeue on a new one).
                    remaining = deadline.remaining()
                    if remaining == 0:
                        raise
                    time.sleep(min(_RECONNECT_PAUSE, remaining or _RECONNECT_PAUSE))
                    stale = True
        except BaseException:
            if watch is not None:
                watch.close()
            raise
        session.park_watch(lease, self._queue, watch)
        return token

    def _check_turn(self, key: bytes, own_revision: int) -> tuple[Turn, int]:
        """The keys ahead of ours now, and the revision read."""
        answer = self._session.gateway.txn(
            compare=[created(key, own_revision)],
            success=[self._queue_read(below=own_revision)])
        if not answer.get("succeeded"):  # our key is gone: deleted by hand or with our lease
            raise _Requeue
        return self._turn(answer), int(answer["header"]["revision"])

    def _queue_read(self, below: int | None = None) -> Message:
        """Read the newest queued keys ahead (created before revision ``below``)."""
        older = {} if below is None else {"max_create_revision": str(below - 1)}
        return {"request_range": {**self._ahead, "sort_order": "DESCEND", "sort_target": "CREATE",
                                  "limit": str(self.keys_read), "keys_only": True, **older}}

    def _turn(self, answer: Message) -> Turn:
        """The keys ahead that :meth:`_queue_read` found, and whether that is all."""
        listed = answer["responses"][0].get("response_range", {})
        return {decode(kv["key"]) for kv in listed.get("kvs", [])}, not listed.get("more")


class EtcdPermit(EtcdLock):
    """A semaphore's permit: a key naming its ``limit``, held with < ``limit`` keys ahead."""

    tries_in_queue = True
    keys_read = 0

    def __init__(self, session: EtcdSession, queue: bytes, stamp: HolderStamp,
                 on_lost: LossCallback, name: bytes, limit: int) -> None:
        super().__init__(session, queue, stamp, on_lost)
        self._name, self._limit, self.room = name, limit, limit - 1
        self._key_prefix = queue + f"{limit:x}-".encode()

    def _turn(self, answer: Message) -> Turn:
        ahead, complete = super()._turn(answer)
        for key in ahead:
            # Its holders use another limit (or it is about to find ours and give up).
            limit = int(key[len(self._queue):].partition(b"-")[0], 16)
            if limit != self._limit:
                raise LimitMismatch(f"semaphore {self._name!r} is in use with limit "
                                    f"{limit}, not {self._limit}")
        return ahead, complete
