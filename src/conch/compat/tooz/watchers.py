"""tooz's watchers: ``watch_join_group`` / ``watch_leave_group`` register callbacks that
``run_watchers()`` calls, in the caller's thread, with :class:`MemberJoinedGroup` /
:class:`MemberLeftGroup` events. conch's group thread is told of each change at once and
queues it here; ``run_watchers()`` delivers the queue in order (a member that joined and
left between two calls gives both events, and a dead member's leave is delivered too)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import conch
from conch.compat.tooz.errors import GroupNotCreated, WatchCallbackNotFound, as_tooz_errors
from conch.compat.tooz.groups import member_bytes
from conch.group_entry import GroupName


class Event:
    """Base of tooz's events."""


class _MemberEvent(Event):
    sign = ""

    def __init__(self, group_id: GroupName, member_id: bytes) -> None:
        self.group_id = group_id
        self.member_id = member_id

    def __repr__(self) -> str:
        group, member = (value.decode() if isinstance(value, bytes) else value
                         for value in (self.group_id, self.member_id))
        return f"<{type(self).__name__}: group {group}: {self.sign}member {member}>"


class MemberJoinedGroup(_MemberEvent):
    """``member_id`` (bytes) joined ``group_id`` (as the watcher named it)."""

    sign = "+"


class MemberLeftGroup(_MemberEvent):
    """``member_id`` (bytes) left ``group_id``: it left, or it died and the server dropped it."""

    sign = "-"


class LeaderElected(_MemberEvent):
    """``member_id`` (bytes: this member) won ``group_id``'s election. ``conch_election`` is
    conch's :class:`conch.Election` of that term: its ``token`` fences the leader's writes,
    its ``lost`` is set if the backend ends the term."""

    def __init__(self, group_id: GroupName, member_id: bytes,
                 conch_election: conch.Election | None = None) -> None:
        super().__init__(group_id, member_id)
        self.conch_election = conch_election


class Hooks(list[Callable[..., Any]]):
    """The callbacks of one group and kind; :meth:`run` calls each, in order."""

    def run(self, *args: Any, **kwargs: Any) -> list[Any]:
        """Every callback's result."""
        return [callback(*args, **kwargs) for callback in self]


class WatcherCalls:
    """tooz's watcher calls, for :class:`~conch.compat.tooz.coordination.CoordinationDriver`
    (which provides ``conch_coordinator`` and calls :meth:`_follow_watched_groups` when
    it starts)."""

    conch_coordinator: conch.Coordinator

    def __init__(self) -> None:
        self._hooks_join_group: dict[GroupName, Hooks] = collections.defaultdict(Hooks)
        self._hooks_leave_group: dict[GroupName, Hooks] = collections.defaultdict(Hooks)
        self._changes: dict[GroupName, collections.deque[conch.GroupEvent]] = {}
        self._subscriptions: dict[GroupName, conch.Subscription] = {}
        self._watch_mutex = threading.Lock()

    def watch_join_group(self, group_id: GroupName,
                         callback: Callable[[MemberJoinedGroup], Any]) -> None:
        """Call ``callback`` from :meth:`run_watchers` for each member that joins
        (``GroupNotCreated`` when the group does not exist)."""
        self._watch(group_id, self._hooks_join_group, callback)

    def unwatch_join_group(self, group_id: GroupName,
                           callback: Callable[[MemberJoinedGroup], Any]) -> None:
        """Stop calling ``callback`` (``WatchCallbackNotFound`` when it is not registered)."""
        self._unwatch(group_id, self._hooks_join_group, callback)

    def watch_leave_group(self, group_id: GroupName,
                          callback: Callable[[MemberLeftGroup], Any]) -> None:
        """Call ``callback`` from :meth:`run_watchers` for each member that leaves or dies."""
        self._watch(group_id, self._hooks_leave_group, callback)

    def unwatch_leave_group(self, group_id: GroupName,
                            callback: Callable[[MemberLeftGroup], Any]) -> None:
        """Stop calling ``callback`` (``WatchCallbackNotFound`` when it is not registered)."""
        self._unwatch(group_id, self._hooks_leave_group, callback)

    def run_watchers(self, timeout: float | None = None) -> list[Any]:
        """Call the callbacks for every change queued since the last call, in order; return
        their results. ``timeout`` is accepted for tooz's signature: nothing here waits.

        A callback's error propagates; the change it was told of is told again next time.
        """
        results: list[Any] = []
        with self._watch_mutex:
            queues = list(self._changes.items())
        for group_id, changes in queues:
            while changes:
                results.extend(self._deliver(group_id, changes[0]))
                changes.popleft()
        return results

    def _deliver(self, group_id: GroupName, change: conch.GroupEvent) -> list[Any]:
        results = []
        for member in sorted(change.joined):
            hooks = self._hooks_join_group.get(group_id, Hooks())
            results.extend(hooks.run(MemberJoinedGroup(group_id, member_bytes(member))))
        for member in sorted(change.left):
            hooks = self._hooks_leave_group.get(group_id, Hooks())
            results.extend(hooks.run(MemberLeftGroup(group_id, member_bytes(member))))
        return results

    def _watch(self, group_id: GroupName, hooks: dict[GroupName, Hooks],
               callback: Callable[..., Any]) -> None:
        with self._watch_mutex:
            if group_id not in self._subscriptions:
                with as_tooz_errors():
                    group = self.conch_coordinator.group(group_id)
                    if not group.exists():
                        raise GroupNotCreated(group_id)
                    self._subscribe(group_id, group)
            hooks[group_id].append(callback)

    def _unwatch(self, group_id: GroupName, hooks: dict[GroupName, Hooks],
                 callback: Callable[..., Any]) -> None:
        with self._watch_mutex:
            if callback not in hooks.get(group_id, ()):
                raise WatchCallbackNotFound(group_id, callback)
            hooks[group_id].remove(callback)
            if not hooks[group_id]:
                del hooks[group_id]
            if group_id not in self._hooks_join_group and group_id not in self._hooks_leave_group:
                subscription = self._subscriptions.pop(group_id, None)
                if subscription is not None:
                    subscription.cancel()
                self._changes.pop(group_id, None)

    def _subscribe(self, group_id: GroupName, group: conch.Group) -> None:
        """Queue ``group``'s changes for ``group_id``'s callbacks (caller holds the mutex)."""
        changes = self._changes.setdefault(group_id, collections.deque())
        self._subscriptions[group_id] = group.watch(changes.append)

    def _follow_watched_groups(self) -> None:
        """The coordinator (re)started: follow the groups that have callbacks again."""
        with self._watch_mutex, as_tooz_errors():
            self._subscriptions.clear()  # the previous start's threads ended with it
            for group_id in {*self._hooks_join_group, *self._hooks_leave_group}:
                self._subscribe(group_id, self.conch_coordinator.group(group_id))
