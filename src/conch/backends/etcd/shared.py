"""``etcd://`` shared holds: keys in the lock's own queue, named apart from the exclusive
holds' keys so that one range read finds the exclusive keys ahead; a shared hold waits only
for those (docs/etcd.md, *Shared locks and semaphores*)."""

from __future__ import annotations

from conch.backends.base import LossCallback
from conch.backends.etcd.client import encode
from conch.backends.etcd.lock import EtcdLock
from conch.backends.etcd.session import EtcdSession
from conch.introspection import HolderStamp

# A shared hold's key starts with this in the queue; an exclusive hold's key starts with
# its lease id in hex (every conch release names them so): all of them sort before "g".
SHARED, _AFTER_EXCLUSIVE = b"shared-", b"g"


class EtcdSharedLock(EtcdLock):
    """A shared hold: its key is named apart in the lock's queue and waits only for the
    exclusive keys ahead, so FIFO with the exclusive holds, beside the other shared ones."""

    def __init__(self, session: EtcdSession, queue: bytes, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        super().__init__(session, queue, stamp, on_lost)
        self._ahead = {"key": encode(queue), "range_end": encode(queue + _AFTER_EXCLUSIVE)}
        self._key_prefix = queue + SHARED
