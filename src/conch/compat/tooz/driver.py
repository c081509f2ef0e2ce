"""The coordinator ``get_coordinator`` returns: :class:`CoordinationDriver`, tooz's lifecycle,
locks, groups, watchers, elections and partitioner on a :class:`conch.Coordinator`.

``start()``/``stop()`` raise :class:`ToozError` when already started/stopped; conch keeps
its session and its members alive by itself, so ``requires_beating`` is False and
``heartbeat()`` does nothing. ``run_watchers()`` also runs the elections, as tooz's."""

from __future__ import annotations

import enum
from typing import Any

import conch
from conch.capabilities import Capabilities
from conch.compat.tooz.elections import ElectionCalls
from conch.compat.tooz.errors import ToozError, as_tooz_errors
from conch.compat.tooz.groups import GroupCalls, member_bytes
from conch.compat.tooz.locking import ConchLock
from conch.compat.tooz.partitioner import Partitioner
from conch.compat.tooz.watchers import WatcherCalls
from conch.group_entry import GroupName
from conch.lock import LockName


class Characteristics(enum.Enum):
    """tooz's description of a driver, for ``get_coordinator(characteristics=...)``."""

    DISTRIBUTED_ACROSS_THREADS = "DISTRIBUTED_ACROSS_THREADS"
    DISTRIBUTED_ACROSS_PROCESSES = "DISTRIBUTED_ACROSS_PROCESSES"
    DISTRIBUTED_ACROSS_HOSTS = "DISTRIBUTED_ACROSS_HOSTS"
    NON_TIMEOUT_BASED = "NON_TIMEOUT_BASED"
    LINEARIZABLE = "LINEARIZABLE"
    SEQUENTIAL = "SEQUENTIAL"
    CAUSAL = "CAUSAL"
    SERIALIZABLE = "SERIALIZABLE"
    SAME_VIEW_UNDER_PARTITIONS = "SAME_VIEW_UNDER_PARTITIONS"
    SAME_VIEW_ACROSS_CLIENTS = "SAME_VIEW_ACROSS_CLIENTS"


# The consistency tooz 9 declares for the server behind each backend (it is the server's).
_CONSISTENCY = {
    "etcd": (Characteristics.LINEARIZABLE, Characteristics.SERIALIZABLE),
    "zookeeper": (Characteristics.SEQUENTIAL,),
    "redis": (Characteristics.CAUSAL,),
    "rediss": (Characteristics.CAUSAL,),
    "memcached": (Characteristics.CAUSAL,),
}


def _characteristics(scheme: str, capabilities: Capabilities) -> tuple[Characteristics, ...]:
    """What conch's backend guarantees, in tooz's words (from its declared capabilities)."""
    found = [Characteristics.DISTRIBUTED_ACROSS_THREADS]
    if scheme != "memory":  # memory:// locks live in one process
        found.append(Characteristics.DISTRIBUTED_ACROSS_PROCESSES)
    if capabilities.distributed:
        found.append(Characteristics.DISTRIBUTED_ACROSS_HOSTS)
    if capabilities.session_bound:  # a dead holder's locks are freed without a timeout
        found.append(Characteristics.NON_TIMEOUT_BASED)
    return (*found, *_CONSISTENCY.get(scheme, ()))


class CoordinationDriver(GroupCalls, ElectionCalls, WatcherCalls):
    """A tooz coordinator backed by a :class:`conch.Coordinator` (``conch_coordinator``).

    ``get_coordinator`` returns an instance of the subclass named as tooz's driver for the
    URL's scheme (``tooz.drivers.redis.RedisDriver``...), this class for conch's own schemes.
    """

    requires_beating = False
    """conch renews its sessions and leases itself: nobody needs to call ``heartbeat()``."""

    def __init__(self, url: str, member_id: bytes | str) -> None:
        """``url`` is a conch URL; use ``get_coordinator`` for tooz URLs."""
        super().__init__()
        member = member_id.decode("utf-8", "backslashreplace") if isinstance(
            member_id, bytes) else member_id
        with as_tooz_errors():
            self.conch_coordinator = conch.Coordinator(url, member)
        self._member_id = member_bytes(member)  # as tooz's group calls give it, for belongs_to_self
        self._scheme = url.partition("://")[0].lower()
        self.CHARACTERISTICS = _characteristics(
            self._scheme, self.conch_coordinator.capabilities)

    def __repr__(self) -> str:
        return f"<conch.compat.tooz.{type(self).__name__} {self.conch_coordinator!r}>"

    @property
    def is_started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self.conch_coordinator.is_started

    def start(self, start_heart: bool = False) -> None:
        """Connect (``start_heart`` is accepted and unused: conch beats by itself).

        Raises :class:`ToozConnectionError` when the backend cannot be reached and
        :class:`ToozError` when already started.
        """
        if self.is_started:
            raise ToozError("can not start a coordinator that is already started")
        with as_tooz_errors():
            self.conch_coordinator.start()
        self._forget_terms()
        self._follow_watched_groups()

    def stop(self) -> None:
        """Leave every group and disconnect. Locks still held are freed; their
        ``release()`` then returns False. Raises :class:`ToozError` when not started."""
        if not self.is_started:
            raise ToozError("can not stop a coordinator that is not started")
        self.conch_coordinator.stop()

    def get_lock(self, name: LockName) -> ConchLock:
        """The lock named ``name`` (``str`` or ``bytes``; ``"x"`` and ``b"x"`` are one lock).

        Raises :class:`ToozError` (also :class:`conch.NotStarted`) when not started.
        """
        with as_tooz_errors():
            lock = self.conch_coordinator.lock(name)
        return ConchLock(name, lock, self.conch_coordinator)

    def heartbeat(self) -> float | None:
        """Nothing to do: conch keeps the session and the memberships alive. Returns None
        (no next beat due), as tooz's drivers that need no beat do."""
        return None

    def join_partitioned_group(
        self, group_id: GroupName, weight: int = 1,
        partitions: int = Partitioner.DEFAULT_PARTITION_NUMBER,
    ) -> Partitioner:
        """Join the group (creating it) with capabilities ``{"weight": weight}`` and return
        a :class:`Partitioner` over its members."""
        self.join_group_create(group_id, capabilities={"weight": weight})
        return Partitioner(self, group_id, partitions=partitions)

    def leave_partitioned_group(self, partitioner: Partitioner) -> None:
        """Leave the partitioner's group and stop the partitioner."""
        leaving = self.leave_group(partitioner.group_id)
        partitioner.stop()
        leaving.get()

    def run_watchers(self, timeout: float | None = None) -> list[Any]:
        """Call the group callbacks (see :class:`WatcherCalls`), then run the elections
        (:meth:`run_elect_coordinator`), as tooz's drivers do; return the group callbacks'
        results (not the election callbacks', as in tooz)."""
        results = super().run_watchers(timeout)
        self.run_elect_coordinator()
        return results
