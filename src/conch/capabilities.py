"""What a backend can promise, declared per backend and checked at connect time."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from conch.errors import NotSupported


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """Guarantees a backend gives.

    ``session_bound``: a holder's locks are freed as soon as it dies, without waiting a TTL.
    ``fencing``: every hold gets a token that strictly increases across holders of a name.
    ``fifo``: waiters are granted the lock in the order they started waiting.
    ``notify``: waiters are woken by the backend, not by polling.
    ``shared_locks``: ``coordinator.lock(name, shared=True)``: shared holds coexist, an
    exclusive one excludes them, and a waiting exclusive one is not starved.
    ``distributed``: the lock excludes processes on different hosts.
    ``introspection``: :meth:`conch.Coordinator.describe` and ``holders`` show who holds a lock.
    ``breakable``: :meth:`conch.Coordinator.break_lock` frees another process's hold, and
    that holder is told it lost the lock.
    ``native_async``: :mod:`conch.aio` waits on the event loop itself (the client library's
    asyncio support, or the backend's socket or file descriptor on the loop), with no
    thread per call; without it, :mod:`conch.aio` runs the sync calls on conch's threads.
    ``groups``: group membership and the partitioner (:meth:`conch.Coordinator.group`).
    ``semaphores``: :meth:`conch.Coordinator.semaphore`, at most ``limit`` holders at once.
    """

    session_bound: bool
    fencing: bool
    fifo: bool
    notify: bool
    shared_locks: bool
    distributed: bool
    introspection: bool = False
    breakable: bool = False
    native_async: bool = False
    groups: bool = False
    semaphores: bool = False

    @classmethod
    def names(cls) -> frozenset[str]:
        """Every capability name."""
        return frozenset(field.name for field in dataclasses.fields(cls))

    def require(self, wanted: Iterable[str], backend: str) -> None:
        """Raise :class:`NotSupported` naming each capability in ``wanted`` that is absent."""
        wanted = set(wanted)
        unknown = wanted - self.names()
        if unknown:
            raise ValueError(
                f"unknown capabilities {sorted(unknown)}; known: {sorted(self.names())}"
            )
        missing = sorted(name for name in wanted if not getattr(self, name))
        if missing:
            raise NotSupported(f"the {backend} backend does not provide {', '.join(missing)}")
