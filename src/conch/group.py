"""Group membership: :class:`Group`, from ``coordinator.group(name)``.

A member stays in its groups while its coordinator runs (the backend's session keeps the
entry alive, no heartbeat calls) and leaves them when it stops. Watchers are called from
the group's own thread (:mod:`conch.group_watch`). README, "Groups and partitioning".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from conch.backends.base import GroupStore
from conch.errors import BackendUnavailable, ConchError, GroupNotFound, NotStarted
from conch.group_entry import GroupName, MemberInfo, decode_entry, encode_entry, group_key
from conch.group_watch import GroupThread, Subscription, Watcher

log = logging.getLogger("conch")
T = TypeVar("T")


class Group:
    """One group as seen by one coordinator's member. ``lost`` is set when the server
    dropped this member (session or lease lost); conch then re-joins it with the same
    capabilities as soon as it can."""

    def __init__(self, name: GroupName, store: GroupStore, member_id: str,
                 describe_error: Callable[[BaseException], str]) -> None:
        self.name = name
        self.key = group_key(name)
        self.member_id = member_id
        self.lost = threading.Event()
        self._store = store
        self._describe_error = describe_error
        self._mutex = threading.RLock()
        self._entry: bytes | None = None  # what this member joined with; None: not joined
        self._must_rejoin = False
        self._joined_at: float | None = None  # when this member first joined, while in
        self._thread: GroupThread | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "joined" if self.joined else "not joined"
        return f"<conch.Group {self.name!r} member {self.member_id!r} {state}>"

    @property
    def joined(self) -> bool:
        """True between :meth:`join` and :meth:`leave` (also while being re-joined)."""
        return self._entry is not None

    @property
    def poll_interval(self) -> float:
        """Seconds between two reads of the members by a watching thread when the backend
        does not push the change (docs/groups.md lists each backend's)."""
        return self._store.poll_interval

    def create(self) -> bool:
        """Create the group; ``False`` when it existed. :meth:`join` creates it too."""
        return self._call(lambda: self._store.create(self.key))

    def delete(self) -> None:
        """Delete the group: :class:`conch.GroupNotFound`, or :class:`conch.GroupNotEmpty`
        while it has live members."""
        self._call(lambda: self._store.delete(self.key))

    def join(self, capabilities: Any = None) -> None:
        """Enter the group (creating it) with ``capabilities``, any JSON value; joining
        again replaces them. Raises :class:`conch.InvalidGroup` for capabilities that are
        not JSON or too large."""
        with self._mutex:
            now = time.time()
            joined_at = self._joined_at or now
            entry = encode_entry(capabilities, joined_at, now)
            self._enter(entry)
            self._entry, self._must_rejoin, self._joined_at = entry, False, joined_at
        self.lost.clear()
        self._started_thread().wake()  # the thread re-joins after a loss

    def leave(self) -> bool:
        """Leave the group; ``False`` when this member was not in it."""
        with self._mutex:
            self._entry, self._must_rejoin, self._joined_at = None, False, None
            was_in = self._call(lambda: self._store.leave(self.key))
        self._wake()
        return was_in

    def members(self) -> dict[str, Any]:
        """The live members' capabilities by member id (``{}``: no such group)."""
        return {member: info.capabilities for member, info in self.member_info().items()}

    def member_info(self) -> dict[str, MemberInfo]:
        """The live members with their capabilities, host, pid and join time."""
        entries = self._call(lambda: self._store.members(self.key))
        return {member: decode_entry(member, data) for member, data in (entries or {}).items()}

    def exists(self) -> bool:
        """True when the group exists (created, or joined, and not deleted)."""
        return self._call(lambda: self._store.members(self.key)) is not None

    def watch(self, watcher: Watcher) -> Subscription:
        """Call ``watcher(event)`` (a :class:`conch.GroupEvent`) from conch's thread for
        each change of the members from now on, in order; ``.cancel()`` the result to stop."""
        return self._started_thread().watch(watcher)

    def close(self) -> None:
        """The coordinator stops: stop the thread and leave (best effort)."""
        with self._mutex:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
        if self._entry is not None:
            try:
                self.leave()
            except ConchError as exc:
                log.warning("conch: leaving group %r on stop failed: %s", self.name, exc)

    def on_lost(self, reason: str) -> None:
        """The backend dropped this member's entry: tell, and re-join from the thread."""
        if self._entry is None or self._closed:
            return
        log.warning("conch: member %r was dropped from group %r: %s",
                    self.member_id, self.name, reason)
        self._must_rejoin = True  # no mutex: a backend may report from inside a call
        self.lost.set()
        self._wake()

    def _rejoin(self) -> None:
        with self._mutex:
            if not self._must_rejoin or self._entry is None:
                return
            try:
                self._enter(self._entry)
            except ConchError as exc:
                log.warning("conch: re-joining group %r failed, will retry: %s", self.name, exc)
                return
            self._must_rejoin = False
        log.warning("conch: member %r re-joined group %r", self.member_id, self.name)

    def _enter(self, entry: bytes) -> None:
        """Join with ``entry``, creating the group when it is missing (caller holds _mutex)."""
        while True:
            try:
                return self._call(lambda: self._store.join(self.key, entry, self.on_lost))
            except GroupNotFound:
                self._call(lambda: self._store.create(self.key))

    def _started_thread(self) -> GroupThread:
        with self._mutex:
            if self._closed:
                raise NotStarted(f"the coordinator of {self!r} is stopped")
            if self._thread is None:
                self._thread = GroupThread(self.name, self.member_info, self._subscribe,
                                           self._store.poll_interval, self._rejoin)
            return self._thread

    def _subscribe(self, changed: Callable[[], None]) -> Callable[[], None]:
        return self._call(lambda: self._store.subscribe(self.key, changed))

    def _wake(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.wake()

    def _call(self, step: Callable[[], T]) -> T:
        try:
            return step()
        except ConchError:
            raise
        except Exception as exc:
            raise BackendUnavailable(self._describe_error(exc)) from None
