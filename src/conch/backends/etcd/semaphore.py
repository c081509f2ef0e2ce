"""``etcd://`` semaphores: a queue of keys on the session's lease under
``<prefix>/semaphores/``, each naming its limit; the ``limit`` oldest keys hold (docs/etcd.md,
*Shared locks and semaphores*)."""

from __future__ import annotations

from conch.backends.base import LossCallback
from conch.backends.etcd.client import Message
from conch.backends.etcd.lock import EtcdLock, Turn
from conch.backends.etcd.session import EtcdSession
from conch.errors import LimitMismatch
from conch.introspection import HolderStamp


class EtcdPermit(EtcdLock):
    """A permit of the semaphore whose keys are under ``queue``, each key naming its limit:
    it holds once fewer than ``limit`` keys are older than its own."""

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
            # Any older key with another limit: its holders use that one (or it is about
            # to find ours and give up); either way the two must not mix.
            limit = int(key[len(self._queue):].partition(b"-")[0], 16)
            if limit != self._limit:
                raise LimitMismatch(f"semaphore {self._name!r} is in use with limit "
                                    f"{limit}, not {self._limit}")
        return ahead, complete
