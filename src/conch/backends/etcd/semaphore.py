"""``etcd://`` semaphores: a queue of keys on the session's lease under
``<prefix>/semaphores/``, each naming its limit; the ``limit`` oldest keys hold, a waiter
re-reads the queue whenever a key of it is deleted (docs/etcd.md, *Shared locks and
semaphores*)."""

from __future__ import annotations

from conch.backends.base import LossCallback
from conch.backends.etcd.client import Message, decode, keys_under
from conch.backends.etcd.lock import EtcdLock
from conch.backends.etcd.session import EtcdSession, Lease
from conch.backends.etcd.watch import Watch
from conch.errors import LimitMismatch
from conch.introspection import HolderStamp


class EtcdPermit(EtcdLock):
    """One holder's permit of a semaphore whose keys are under ``queue``: it holds once
    fewer than ``limit`` keys are older than its own."""

    tries_in_queue = True

    def __init__(self, session: EtcdSession, queue: bytes, stamp: HolderStamp,
                 on_lost: LossCallback, name: bytes, limit: int) -> None:
        super().__init__(session, queue, stamp, on_lost)
        self._name, self._limit = name, limit

    def _new_key(self, lease: Lease) -> bytes:
        return lease.new_key(self._queue + f"{self._limit:x}-".encode())

    def _queue_reads(self, below: int | None = None) -> list[Message]:
        """Read every queued key (created before revision ``below``), oldest first."""
        older = {} if below is None else {"max_create_revision": str(below - 1)}
        return [{"request_range": keys_under(self._queue, sort_order="ASCEND",
                                             sort_target="CREATE", keys_only=True, **older)}]

    def _turn(self, answer: Message) -> tuple[bytes | None, bool]:
        """None when fewer than ``limit`` keys are ahead; else the queue, watched whole."""
        ahead = answer["responses"][0].get("response_range", {}).get("kvs", [])
        for kv in ahead:
            # Any older key with another limit: its holders use that one (or it is about
            # to find ours and give up); either way the two must not mix.
            limit = int(decode(kv["key"])[len(self._queue):].partition(b"-")[0], 16)
            if limit != self._limit:
                raise LimitMismatch(f"semaphore {self._name!r} is in use with limit "
                                    f"{limit}, not {self._limit}")
        return (self._queue if len(ahead) >= self._limit else None), False

    def _watch(self, lease: Lease, predecessor: bytes, key: bytes) -> Watch:
        # Any key ahead may go first, ours with it when the lease expires.
        return self._session.watch(lease, (self._queue,), under=True)
