"""``AsyncCoordinator``: a :class:`conch.Coordinator` for asyncio programs.

It wraps a sync coordinator (the backend, its session and its liveness are
exactly those of the sync API) and never blocks the event loop: connecting
and closing run on conch's thread pool, and lock waits go through one
:class:`~conch.aio.queue.NameQueue` per name and event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from conch import metrics
from conch.aio.election import AsyncElection
from conch.aio.lock import AsyncLock
from conch.aio.queue_table import QueueTable
from conch.aio.threads import pool, run_in_thread
from conch.capabilities import Capabilities
from conch.coordinator import Coordinator
from conch.defaults import default_url
from conch.election import election_lock_name
from conch.errors import NotStarted
from conch.hold_kinds import OpenHandle, permits
from conch.hold_kinds import shared as shared_hold
from conch.introspection import LockInfo
from conch.lock import LockName, lock_key
from conch.metrics_handles import LockMeter

_shared: weakref.WeakValueDictionary[int, AsyncCoordinator] = weakref.WeakValueDictionary()
_shared_mutex = threading.Lock()



class AsyncCoordinator:
    """A member of the group using ``url``'s backend, for asyncio. Not started: ``await``
    :meth:`start`, or use :func:`conch.aio.connect`.

    The arguments are those of :class:`conch.Coordinator`; a malformed URL, an unknown
    option or a missing capability raises here, before any I/O.
    """

    def __init__(self, url: str, member_id: str | None = None, prefix: str = "",
                 require: Iterable[str] = ()) -> None:
        self._init(Coordinator(url, member_id, prefix, require))

    def _init(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        """The sync coordinator underneath: its locks exclude this one's like another
        member's do."""
        self._queues = QueueTable(coordinator)

    @classmethod
    def sharing(cls, coordinator: Coordinator) -> AsyncCoordinator:
        """The AsyncCoordinator of an existing ``coordinator``: the same member, session
        and start/stop (stopping either stops both). Asked twice for one coordinator,
        it gives the same object while that one is in use, so their waiters share queues."""
        with _shared_mutex:
            shared = _shared.get(id(coordinator))
            if shared is None or shared.coordinator is not coordinator:
                shared = cls.__new__(cls)
                shared._init(coordinator)
                _shared[id(coordinator)] = shared
            return shared

    @property
    def url(self) -> str:
        """The backend URL with credentials redacted."""
        return self.coordinator.url

    @property
    def member_id(self) -> str:
        """This member's id (the ``prefix`` and the given or random id)."""
        return self.coordinator.member_id

    @property
    def capabilities(self) -> Capabilities:
        """What this coordinator's backend guarantees."""
        return self.coordinator.capabilities

    @property
    def is_started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self.coordinator.is_started

    def __repr__(self) -> str:
        state = "started" if self.is_started else "stopped"
        return f"<conch.aio.AsyncCoordinator {self.member_id!r} {self.url} {state}>"

    async def start(self) -> AsyncCoordinator:
        """Connect and open the session (on a thread). Raises :class:`conch.BackendUnavailable`.

        If the caller is cancelled meanwhile, the connection may still complete:
        :meth:`stop` ends it.
        """
        await run_in_thread(self.coordinator.start)
        return self

    async def stop(self) -> None:
        """End the session. Pending acquires raise :class:`conch.NotStarted`; locks still
        held are freed and their holders told they lost them (:attr:`AsyncLock.lost`)."""
        queues = self._queues.take_all()
        running = asyncio.get_running_loop()
        reason = f"coordinator {self.member_id!r} on {self.url} stopped while the lock was awaited"
        ending: list[asyncio.Future[Any]] = []
        for queue in queues:
            if queue.loop is running:
                ending += queue.close(reason)
            else:  # a queue of another event loop (a shared coordinator's)
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    queue.loop.call_soon_threadsafe(queue.close, reason)
        if ending:  # cancelled native acquires: let them give back what they got first
            await asyncio.wait(ending)
        backend = self.coordinator._backend
        await run_in_thread(self.coordinator.stop)
        if backend is not None:
            await backend.close_async()

    def lock(self, name: LockName, metric_label: str | None = None, *,
             shared: bool = False) -> AsyncLock:
        """A lock object for ``name`` (``str`` or ``bytes``; ``"x"`` and ``b"x"`` are one lock);
        ``shared=True``: a shared hold, as :meth:`conch.Coordinator.lock`.

        ``metric_label`` is as for :meth:`conch.Coordinator.lock`.

        Raises :class:`conch.InvalidLockName` for a bad name and :class:`conch.NotStarted`
        before :meth:`start`.
        """
        if shared:
            self.capabilities.require(["shared_locks"], self.coordinator._url.scheme)
            return self._own_hold(name, metric_label, shared_hold)
        key = lock_key(name)
        self._started_sync()
        return AsyncLock(name, lambda: self._queues.get(name, key), self._meter(name, metric_label))

    def semaphore(self, name: LockName, limit: int,
                  metric_label: str | None = None) -> AsyncLock:
        """One holder's permit of semaphore ``name``, as :meth:`conch.Coordinator.semaphore`
        (an :class:`AsyncLock` whose holds are permits)."""
        _, open_permit = permits(limit)
        self.capabilities.require(["semaphores"], self.coordinator._url.scheme)
        return self._own_hold(name, metric_label, open_permit)

    def _own_hold(self, name: LockName, metric_label: str | None,
                  open_handle: OpenHandle) -> AsyncLock:
        """A lock object with a queue of its own (its holds coexist with other objects'),
        through conch's threads."""
        key = lock_key(name)
        self._started_sync()
        owner = object()
        return AsyncLock(name, lambda: self._queues.get(name, key, owner, open_handle),
                         self._meter(name, metric_label))

    def _meter(self, name: LockName, metric_label: str | None
               ) -> Callable[[], LockMeter] | None:
        scheme = self.coordinator._url.scheme
        return (lambda: metrics.lock_meter(scheme, name, metric_label)) if metrics.ENABLED \
            else None

    get_lock = lock

    def election(self, name: LockName, watch_interval: float = 1.0) -> AsyncElection:
        """A candidate in election ``name``, as :meth:`conch.Coordinator.election`."""
        lock_name = election_lock_name(name)
        lock = self.lock(lock_name, "election")
        return AsyncElection(name, lock, lambda: self.describe(lock_name),
                             lambda: self.coordinator.describe(lock_name), watch_interval)

    async def describe(self, name: LockName) -> LockInfo:
        """Who holds lock ``name`` now, since when, and who waits (``None`` where the
        backend cannot tell), as :meth:`conch.Coordinator.describe`. A short call (a
        few round-trips), run on conch's thread pool.

        Raises :class:`conch.InvalidLockName` for a bad name and :class:`conch.NotStarted`
        before :meth:`start` (both before any I/O), :class:`conch.NotSupported` unless
        the backend has the ``introspection`` capability, and
        :class:`conch.BackendUnavailable` when the backend cannot answer.
        """
        key = lock_key(name)
        sync = self._started_sync()
        return await run_in_thread(lambda: sync.describe(key))

    async def holders(self, prefix: LockName = "") -> list[LockInfo]:
        """The locks held now whose name starts with ``prefix`` (``str`` or ``bytes``),
        sorted by name, as :meth:`conch.Coordinator.holders`. A short call run on conch's
        thread pool, but it reads every lock on some backends: not for a hot path.

        Raises :class:`conch.NotStarted` before :meth:`start` (before any I/O), and
        :class:`conch.NotSupported` and :class:`conch.BackendUnavailable` as
        :meth:`describe` does.
        """
        sync = self._started_sync()
        return await run_in_thread(lambda: sync.holders(prefix))

    async def break_lock(self, name: LockName, token: int | None = None) -> LockInfo:
        """Free lock ``name`` whoever holds it, as :meth:`conch.Coordinator.break_lock`:
        the holder is told it lost the lock (an :class:`AsyncLock`'s :attr:`~AsyncLock.lost`
        is set) at once or at its next renewal or session check. With ``token``, only the
        hold with that fencing token is broken, else :class:`conch.HolderChanged` is raised.
        Returns the lock as it was just before (``holder`` ``None``: it was free).

        A short call run on conch's thread pool; if the caller is cancelled meanwhile,
        the break may still happen. Only for holders that are gone or stuck: the holder
        may still be acting on what the lock protects, which is why stores should check
        fencing tokens.

        Raises :class:`conch.InvalidLockName` and :class:`conch.NotStarted` before any
        I/O, :class:`conch.NotSupported` unless the backend is ``breakable``,
        :class:`conch.BreakRefused` when the server denies the right, and
        :class:`conch.BackendUnavailable` when the backend cannot answer.
        """
        key = lock_key(name)
        sync = self._started_sync()
        return await run_in_thread(lambda: sync.break_lock(key, token))

    def _started_sync(self) -> Coordinator:
        """The sync coordinator; :class:`conch.NotStarted` before :meth:`start`."""
        if not self.is_started:
            raise NotStarted(f"{self!r} is not started: await start() or use conch.aio.connect()")
        return self.coordinator

    async def __aenter__(self) -> AsyncCoordinator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def connect(
    url: str | None = None,
    member_id: str | None = None,
    prefix: str = "",
    require: Iterable[str] = (),
) -> AsyncCoordinator:
    """A started :class:`AsyncCoordinator` for ``url`` (default: ``CONCH_URL``, then the
    file default). ``async with`` it to stop it on exit."""
    coordinator = AsyncCoordinator(url or default_url(), member_id, prefix, require)
    sync = coordinator.coordinator
    starting = pool().submit(sync.start)
    try:
        await asyncio.wrap_future(starting)
    except asyncio.CancelledError:
        # The start may go on in its thread, and nobody would stop it.
        starting.add_done_callback(lambda _: sync.stop())
        raise
    return coordinator
