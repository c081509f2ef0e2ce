"""``tooz.coordination``, the lock part: :func:`get_coordinator` and the coordinator it returns.

``get_coordinator(backend_url, member_id)`` takes tooz URLs (see
:mod:`conch.compat.tooz.urls`) and conch URLs. The coordinator has tooz's lifecycle
(``start()``/``stop()`` raise :class:`ToozError` when already started/stopped) and
``get_lock``; conch keeps its session alive by itself, so ``requires_beating`` is False
and ``heartbeat()`` does nothing. Group membership, leader election, watchers and the
partitioner are not provided: each of their methods raises :class:`NotImplemented`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import conch
from conch.capabilities import Capabilities
from conch.compat.tooz import errors
from conch.compat.tooz.errors import (
    GroupAlreadyExist,
    GroupNotCreated,
    GroupNotEmpty,
    LockAcquireFailed,
    LockLost,
    MemberAlreadyExist,
    MemberNotJoined,
    NotImplemented,
    OperationTimedOut,
    ToozConnectionError,
    ToozDriverChosenPoorly,
    ToozError,
    WatchCallbackNotFound,
    as_tooz_errors,
)
from conch.compat.tooz.locking import ConchLock
from conch.compat.tooz.urls import to_conch_url
from conch.lock import LockName

__all__ = [
    "Characteristics",
    "CoordinationDriver",
    "GroupAlreadyExist",
    "GroupNotCreated",
    "GroupNotEmpty",
    "LockAcquireFailed",
    "LockLost",
    "MemberAlreadyExist",
    "MemberNotJoined",
    "NotImplemented",
    "OperationTimedOut",
    "ToozConnectionError",
    "ToozDriverChosenPoorly",
    "ToozError",
    "WatchCallbackNotFound",
    "get_coordinator",
]


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


def _not_provided(method: str, feature: str) -> Callable[..., NoReturn]:
    def unsupported(self: CoordinationDriver, *args: Any, **kwargs: Any) -> NoReturn:
        raise errors.NotImplemented(
            f"{method}() is not provided: conch.compat.tooz implements tooz's locks only, "
            f"not {feature} (yet)"
        )

    unsupported.__name__ = method
    unsupported.__doc__ = f"Not provided: raises :class:`NotImplemented` ({feature})."
    return unsupported


class CoordinationDriver:
    """A tooz coordinator backed by a :class:`conch.Coordinator` (``conch_coordinator``)."""

    requires_beating = False
    """conch renews its sessions and leases itself: nobody needs to call ``heartbeat()``."""

    def __init__(self, url: str, member_id: bytes | str) -> None:
        """``url`` is a conch URL; use :func:`get_coordinator` for tooz URLs."""
        member = member_id.decode("utf-8", "backslashreplace") if isinstance(
            member_id, bytes) else member_id
        with as_tooz_errors():
            self.conch_coordinator = conch.Coordinator(url, member)
        self._scheme = url.partition("://")[0].lower()
        self.CHARACTERISTICS = _characteristics(
            self._scheme, self.conch_coordinator.capabilities)

    def __repr__(self) -> str:
        return f"<conch.compat.tooz.CoordinationDriver {self.conch_coordinator!r}>"

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

    def stop(self) -> None:
        """Disconnect. Locks still held are freed; their ``release()`` then returns False.

        Raises :class:`ToozError` when not started.
        """
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
        """Nothing to do: conch keeps the session alive. Returns None (no next beat due)."""
        return None

    create_group = _not_provided("create_group", "group membership")
    get_groups = _not_provided("get_groups", "group membership")
    join_group = _not_provided("join_group", "group membership")
    join_group_create = _not_provided("join_group_create", "group membership")
    leave_group = _not_provided("leave_group", "group membership")
    delete_group = _not_provided("delete_group", "group membership")
    get_members = _not_provided("get_members", "group membership")
    get_member_info = _not_provided("get_member_info", "group membership")
    get_member_capabilities = _not_provided("get_member_capabilities", "group membership")
    get_members_with_capabilities = _not_provided(
        "get_members_with_capabilities", "group membership")
    update_capabilities = _not_provided("update_capabilities", "group membership")
    get_leader = _not_provided("get_leader", "leader election")
    stand_down_group_leader = _not_provided("stand_down_group_leader", "leader election")
    run_elect_coordinator = _not_provided("run_elect_coordinator", "leader election")
    watch_elected_as_leader = _not_provided("watch_elected_as_leader", "leader election")
    unwatch_elected_as_leader = _not_provided("unwatch_elected_as_leader", "leader election")
    watch_join_group = _not_provided("watch_join_group", "watchers")
    unwatch_join_group = _not_provided("unwatch_join_group", "watchers")
    watch_leave_group = _not_provided("watch_leave_group", "watchers")
    unwatch_leave_group = _not_provided("unwatch_leave_group", "watchers")
    run_watchers = _not_provided("run_watchers", "watchers")
    join_partitioned_group = _not_provided("join_partitioned_group", "the partitioner")
    leave_partitioned_group = _not_provided("leave_partitioned_group", "the partitioner")


def get_coordinator(
    backend_url: str,
    member_id: bytes | str,
    characteristics: Iterable[Characteristics] | None = frozenset(),
    **kwargs: Any,
) -> CoordinationDriver:
    """A coordinator (not started) for ``backend_url``, a tooz or conch URL.

    ``kwargs`` override the URL's query options, as in tooz. Raises
    :class:`conch.InvalidURL` for a malformed URL or an option conch cannot honour, and
    :class:`ToozDriverChosenPoorly` when the backend lacks a wanted characteristic.
    """
    coordinator = CoordinationDriver(to_conch_url(backend_url, kwargs), member_id)
    missing = set(characteristics or ()) - set(coordinator.CHARACTERISTICS)
    if missing:
        raise ToozDriverChosenPoorly(
            f"the {coordinator._scheme} backend lacks "
            f"{', '.join(sorted(item.value for item in missing))} (it has "
            f"{', '.join(item.value for item in coordinator.CHARACTERISTICS)})"
        )
    return coordinator
