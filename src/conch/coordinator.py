"""The Coordinator: one member of a group of processes sharing a lock backend.

It owns the backend connection and its session (lease, heartbeat, connection),
which keeps alive every lock its :class:`~conch.lock.Lock` objects hold.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from conch import metrics
from conch.backends.base import Backend, GroupStore, LockHandle, LossCallback
from conch.backends.loader import backend_class
from conch.capabilities import Capabilities
from conch.defaults import default_url
from conch.election import Election, election_lock_name
from conch.errors import BackendUnavailable, ConchError, NotStarted
from conch.group import Group
from conch.group_entry import GroupName, group_key
from conch.hold_kinds import OpenHandle, permits
from conch.hold_kinds import shared as shared_hold
from conch.hold_state import Membership
from conch.introspection import LockInfo, matching
from conch.lock import Lock, LockName, lock_key
from conch.partitioner import Partitioner
from conch.semaphore import Semaphore
from conch.url import parse_url

T = TypeVar("T")


class Coordinator:
    """A member of the group using ``url``'s backend. Not started: call :meth:`start`.

    ``member_id`` defaults to a random UUID; ``prefix`` is prepended to it.
    ``require`` names capabilities (see :class:`conch.Capabilities`) the backend
    must have. A malformed URL, an unknown option or a missing capability raises
    here (:class:`conch.InvalidURL`, :class:`conch.NotSupported`), before any I/O.
    """

    def __init__(
        self,
        url: str,
        member_id: str | None = None,
        prefix: str = "",
        require: Iterable[str] = (),
    ) -> None:
        self._url = parse_url(url)
        self.member_id = prefix + (member_id or str(uuid.uuid4()))
        self._backend_class = backend_class(self._url)
        self._required = frozenset(require)
        self.capabilities.require(self._required, self._url.scheme)
        # Built now so a bad URL option fails here; a backend does no I/O until connect().
        self._unused_backend: Backend | None = self._backend_class(self._url, self.member_id)
        self._backend: Backend | None = None
        self._state_lock = threading.Lock()
        self._membership: Membership | None = None  # set while started
        self._groups: dict[bytes, Group] = {}  # this start's groups, by key
        self._group_store: GroupStore | None = None

    @property
    def url(self) -> str:
        """The backend URL with credentials redacted."""
        return self._url.redacted()

    @property
    def capabilities(self) -> Capabilities:
        """What this coordinator's backend guarantees."""
        return self._backend_class.capabilities

    @property
    def is_started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._backend is not None

    def __repr__(self) -> str:
        state = "started" if self.is_started else "stopped"
        return f"<conch.Coordinator {self.member_id!r} {self.url} {state}>"

    def start(self) -> Coordinator:
        """Connect and open the session. Raises :class:`conch.BackendUnavailable`."""
        with self._state_lock:
            if self._backend is None:
                backend = self._unused_backend or self._backend_class(self._url, self.member_id)
                self._unused_backend = None
                try:
                    backend.connect()
                except ConchError:
                    raise
                except Exception as exc:
                    raise BackendUnavailable(self._describe_error(exc)) from None
                self._membership = Membership(f"coordinator {self.member_id!r} on {self.url}")
                self._backend = backend
        return self

    def stop(self) -> None:
        """End the session. Locks still held are freed and their holders told they lost
        them; acquires waiting meanwhile raise :class:`conch.NotStarted`."""
        with self._state_lock:
            backend, self._backend = self._backend, None
            membership, self._membership = self._membership, None
        if backend is None or membership is None:
            return
        with self._state_lock:
            groups, self._groups = list(self._groups.values()), {}
            self._group_store = None
        for group in groups:
            group.close()
        for lock in membership.stop():
            lock._abandon("the coordinator was stopped")
        backend.close()  # which wakes, or fails, the backend's waits where it can

    def lock(self, name: LockName, metric_label: str | None = None, *,
             shared: bool = False) -> Lock:
        """A lock object for ``name`` (``str`` or ``bytes``; ``"x"`` and ``b"x"`` are one lock).

        ``shared=True`` makes a shared (read) hold of the same lock: shared holds coexist,
        an exclusive one excludes them all (``shared_locks`` capability, else
        :class:`conch.NotSupported`). ``metric_label`` is the ``conch.lock`` attribute of its
        metrics: keep the number of distinct labels small (default:
        :func:`conch.metrics.name_label`).
        """
        if shared:
            self.capabilities.require(["shared_locks"], self._url.scheme)
            return self._lock(name, metric_label, metered=True, open_handle=shared_hold)
        return self._lock(name, metric_label, metered=True)

    get_lock = lock

    def semaphore(self, name: LockName, limit: int, metric_label: str | None = None
                  ) -> Semaphore:
        """One holder's object of semaphore ``name``: at most ``limit`` objects (of every
        process using it, all with the same limit) hold at once (``semaphores``
        capability). It has a lock's contract: blocking rules, tokens, loss."""
        checked, open_permit = permits(limit)
        self.capabilities.require(["semaphores"], self._url.scheme)
        lock = self._lock(name, metric_label, metered=True, open_handle=open_permit)
        return Semaphore(lock, checked)

    def _lock(self, name: LockName, metric_label: str | None = None, *, metered: bool,
              open_handle: OpenHandle | None = None) -> Lock:
        """:meth:`lock`; ``metered=False`` for :mod:`conch.aio`, which meters each
        coroutine's acquire rather than the calls its queue makes for them."""
        key = lock_key(name)
        backend, membership = self._started()

        def make_handle(on_lost: LossCallback) -> LockHandle:
            if open_handle is None:
                return backend.handle(key, on_lost)
            return open_handle(backend, key, on_lost)

        if metered and metrics.ENABLED:
            label = metrics.label_of(name, metric_label)
            return Lock(name, metrics.metered(make_handle, self._url.scheme, label),
                        self._describe_error, membership)
        return Lock(name, make_handle, self._describe_error, membership)

    def election(self, name: LockName, watch_interval: float = 1.0) -> Election:
        """A candidate in election ``name`` (one term at a time per object): leading is
        holding the lock ``conch-election:<name>``. Watchers of leader changes are told
        within ``watch_interval`` seconds (at once of this object's own campaign or
        resignation). Needs the ``introspection`` capability (every built-in backend)."""
        lock_name = election_lock_name(name)
        lock = self._lock(lock_name, "election", metered=True)
        return Election(name, lock, lambda: self.describe(lock_name), watch_interval)

    def group(self, name: GroupName) -> Group:
        """Group ``name`` as this member sees it (one object per name while started).
        Raises :class:`conch.NotSupported` unless the backend has the ``groups`` capability."""
        key = group_key(name)
        backend, _ = self._started()
        with self._state_lock:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = Group(name, self._groups_of(backend),
                                                  self.member_id, self._describe_error)
            return group

    def partitioner(self, name: GroupName, partitions: int = 32, replicas: int = 1,
                    weight: int = 1, capabilities: dict[str, Any] | None = None) -> Partitioner:
        """Join group ``name`` with ``weight`` (and ``capabilities``) and place objects over
        its live members with consistent hashing, as tooz's partitioner does."""
        return Partitioner(self.group(name), partitions, replicas,
                           {**(capabilities or {}), "weight": weight})

    def groups(self) -> list[str]:
        """The names of the groups that exist on the backend, sorted (``groups`` capability)."""
        with self._state_lock:
            store = self._groups_of(self._started()[0])
        names = self._introspect(lambda _: store.names())
        return sorted(name.decode("utf-8", "surrogateescape") for name in names)

    def _groups_of(self, backend: Backend) -> GroupStore:
        """This start's group store (caller holds ``_state_lock``)."""
        if self._group_store is None:
            self.capabilities.require(["groups"], self._url.scheme)
            self._group_store = self._introspect(lambda _: backend.groups())
        return self._group_store

    def describe(self, name: LockName) -> LockInfo:
        """Who holds lock ``name`` now, since when, and who waits (``None`` where the
        backend cannot tell). Raises :class:`conch.NotSupported` unless the backend has
        the ``introspection`` capability."""
        key = lock_key(name)
        return self._introspect(lambda backend: backend.describe_lock(key))

    def holders(self, prefix: LockName = "") -> list[LockInfo]:
        """The locks held now whose name starts with ``prefix``, sorted by name
        (``introspection`` capability)."""
        wanted = prefix.encode("utf-8", "surrogateescape") if isinstance(prefix, str) \
            else bytes(prefix)
        return self._introspect(lambda backend: matching(backend.list_locks(wanted), wanted))

    def break_lock(self, name: LockName, token: int | None = None) -> LockInfo:
        """Free lock ``name`` whoever holds it; the holder is told it lost the lock (at its
        next renewal or session check). With ``token``, only the hold with that fencing
        token is broken, else :class:`conch.HolderChanged` is raised.
        Returns the lock as it was just before (``holder`` ``None``: it was free).

        Only for holders that are gone or stuck: the holder may still be acting on
        what the lock protects, which is why stores should check fencing tokens.
        Raises :class:`conch.NotSupported` unless the backend is ``breakable``.
        """
        key = lock_key(name)
        return self._introspect(lambda backend: backend.break_lock(key, token))

    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _started(self) -> tuple[Backend, Membership]:
        """The backend and membership of this start; :class:`conch.NotStarted` when stopped."""
        membership, backend = self._membership, self._backend
        if backend is None or membership is None:
            raise NotStarted(f"{self!r} is not started: call start() or use conch.connect()")
        return backend, membership

    def _introspect(self, look: Callable[[Backend], T]) -> T:
        backend, _ = self._started()
        try:
            return look(backend)
        except ConchError:
            raise
        except Exception as exc:
            raise BackendUnavailable(self._describe_error(exc)) from None

    def _describe_error(self, exc: BaseException) -> str:
        text = f"{self._url.scheme} backend at {self.url}: {type(exc).__name__}: {exc}"
        for secret in self._url.secrets:
            text = text.replace(secret, "***")
        return text


def connect(
    url: str | None = None,
    member_id: str | None = None,
    prefix: str = "",
    require: Iterable[str] = (),
) -> Coordinator:
    """A started :class:`Coordinator` for ``url`` (default: ``CONCH_URL``, then the file default).

    Use it as a context manager to stop it on exit.
    """
    return Coordinator(url or default_url(), member_id, prefix, require).start()
