"""Leader election: :class:`Election`, from ``coordinator.election(name)``. Leading is holding
the lock ``conch-election:<name>`` (``conch ls`` shows it), so an election has the lock's
whole contract on every backend: blocking rules, waiters woken by the backend, a strictly
increasing fencing token per term, ``lost`` when the backend ends the term. Who leads is read
from the server (``leader()``); watchers hear of changes from conch's thread (docs/elections.md).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from conch.errors import ConchError, InvalidLockName, LockAcquireFailed, NotStarted
from conch.group_watch import Subscription
from conch.introspection import LockInfo
from conch.lock import Blocking, EventT, HeldThrough, HoldingLock, Lock, wait_budget, waited

log = logging.getLogger("conch")

KEY_PREFIX = "conch-election:"
"""What an election's lock name starts with."""


def election_lock_name(name: str | bytes) -> str | bytes:
    """The name of election ``name``'s lock (:class:`conch.InvalidLockName` for a bad one)."""
    if not name or not isinstance(name, (str, bytes)):
        raise InvalidLockName(f"an election name must be a non-empty str or bytes, not {name!r}")
    return KEY_PREFIX.encode() + name if isinstance(name, bytes) else KEY_PREFIX + name


def not_won(name: str | bytes, blocking: Blocking) -> LockAcquireFailed:
    """The error of ``with election(blocking):`` when the campaign failed."""
    return LockAcquireFailed(f"election {name!r} not won {waited(blocking)}")


@dataclasses.dataclass(frozen=True)
class LeaderChange:
    """The election's leader changed from ``previous`` to ``leader`` (member ids; ``None``:
    nobody), with the new term's fencing token where the backend tells it."""

    election: str | bytes
    leader: str | None
    previous: str | None
    token: int | None


LeaderWatcher = Callable[[LeaderChange], object]


class Candidate(HeldThrough[EventT]):
    """What :class:`Election` and :class:`conch.aio.AsyncElection` share: the term is the
    lock's hold, and one :class:`LeaderWatch` per object, started by the first watcher."""

    def __init__(self, name: str | bytes, lock: HoldingLock[EventT],
                 describe_now: Callable[[], LockInfo], watch_interval: float) -> None:
        super().__init__(lock)
        self.name = name
        self._describe_now = describe_now
        self._watch_interval = watch_interval
        self._watch: LeaderWatch | None = None
        self._watch_mutex = threading.Lock()

    @property
    def is_leader(self) -> bool:
        """True while this object's term lasts (campaign won, not resigned, not lost)."""
        return self._lock.held and not self._lock.lost.is_set()

    def _add_watcher(self, watcher: LeaderWatcher) -> Subscription:
        with self._watch_mutex:
            if self._watch is None:
                self._watch = LeaderWatch(self.name, self._describe_now, self._watch_interval)
            return self._watch.add(watcher)

    def _poke(self) -> None:
        watch = self._watch
        if watch is not None:
            watch.wake()


def leader_of(info: LockInfo) -> str | None:
    """The member id holding the election's lock in ``info`` (``None``: nobody leads)."""
    return None if info.holder is None else info.holder.member_id


class Election(Candidate[threading.Event]):
    """One candidate of an election (one object per call of ``coordinator.election``)."""

    _lock: Lock

    def __repr__(self) -> str:
        return f"<conch.Election {self.name!r} {'leading' if self.is_leader else 'not leading'}>"

    def campaign(self, blocking: Blocking = True) -> bool:
        """Become the leader, waiting as ``blocking`` says (the lock's rules); whether it
        did. Raises :class:`conch.NotStarted`, :class:`conch.BackendUnavailable`."""
        won = self._lock.acquire(blocking)
        if won:
            self._poke()
        return won

    def resign(self) -> None:
        """End this term: :class:`conch.LockNotHeld` when not leading, :class:`conch.LockLost`
        when the term was already lost (it has ended either way)."""
        try:
            self._lock.release()
        finally:
            self._poke()

    def leader(self) -> str | None:
        """The member id of the current leader, as the server sees it now (``None``:
        nobody leads)."""
        return leader_of(self._describe_now())

    def watch(self, watcher: LeaderWatcher) -> Subscription:
        """Call ``watcher`` (a :class:`conch.LeaderChange`) from conch's thread each time the
        leader changes from now on; ``.cancel()`` the result to stop."""
        return self._add_watcher(watcher)

    def __call__(self, blocking: Blocking = True) -> _Term:
        """A context manager: campaign with ``blocking`` (else :class:`LockAcquireFailed`)
        and resign on exit."""
        wait_budget(blocking)
        return _Term(self, blocking)

    def __enter__(self) -> Election:
        return _Term(self, True).__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self.resign()


class _Term:
    """``with election(blocking):``."""

    def __init__(self, election: Election, blocking: Blocking) -> None:
        self._election, self._blocking = election, blocking

    def __enter__(self) -> Election:
        if not self._election.campaign(self._blocking):
            raise not_won(self._election.name, self._blocking)
        return self._election

    def __exit__(self, *exc_info: object) -> None:
        self._election.resign()


class LeaderWatch:
    """A thread that reads the election's holder every ``interval`` seconds (and at once
    when this object campaigns or resigns) and tells its watchers of each new term; it
    ends with the coordinator."""

    def __init__(self, name: str | bytes, describe: Callable[[], LockInfo],
                 interval: float) -> None:
        self._name, self._describe, self._interval = name, describe, interval
        self._mutex = threading.Lock()
        self._watchers: list[LeaderWatcher] = []
        self._wake = threading.Event()
        self._leader = self._read()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"conch-election-{name!r}")
        self._thread.start()

    def add(self, watcher: LeaderWatcher) -> Subscription:
        with self._mutex:
            self._watchers.append(watcher)
        return Subscription(self._watchers, watcher, self._mutex)

    def wake(self) -> None:
        self._wake.set()

    def _read(self) -> tuple[str | None, int | None]:
        holder = self._describe().holder
        return (None, None) if holder is None else (holder.member_id, holder.token)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                current = self._read()
            except NotStarted:  # the coordinator stopped: so does its watching
                return
            except ConchError as exc:
                log.warning("conch: reading election %r's leader failed: %s", self._name, exc)
                continue
            if current == self._leader:  # the same term
                continue
            change = LeaderChange(self._name, current[0], self._leader[0], current[1])
            self._leader = current
            with self._mutex:
                watchers = list(self._watchers)
            for watcher in watchers:
                try:
                    watcher(change)
                except Exception:
                    log.exception("conch: a watcher of election %r failed", self._name)
