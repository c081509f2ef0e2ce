"""tooz's leader election on :class:`conch.Election`: one election per tooz group, named as
the group (``coordinator.election(group)`` in conch's own API is the same election). As in
tooz, a member campaigns only in ``run_elect_coordinator()`` (which ``run_watchers()`` runs),
once, without waiting, and its ``watch_elected_as_leader`` callbacks are called there when
it wins. The group need not exist. README, "Switching from tooz", lists the differences."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import conch
from conch.compat.tooz.errors import WatchCallbackNotFound, as_tooz_errors
from conch.compat.tooz.groups import group_bytes, member_bytes
from conch.compat.tooz.results import CoordinatorResult, run_now
from conch.compat.tooz.watchers import Hooks, LeaderElected
from conch.group_entry import GroupName

log = logging.getLogger("conch")


class ElectionCalls:
    """tooz's election calls, for :class:`~conch.compat.tooz.coordination.CoordinationDriver`
    (which provides ``conch_coordinator`` and ``_member_id``, and calls
    :meth:`_forget_terms` when it starts)."""

    conch_coordinator: conch.Coordinator
    _member_id: bytes

    def __init__(self) -> None:
        super().__init__()
        self._hooks_elected_leader: dict[GroupName, Hooks] = {}
        self._elections: dict[bytes, conch.Election] = {}  # by group name as bytes
        self._election_mutex = threading.Lock()

    def watch_elected_as_leader(self, group_id: GroupName,
                                callback: Callable[[LeaderElected], Any]) -> None:
        """Campaign for ``group_id``'s leadership in each ``run_elect_coordinator()`` and
        call ``callback`` there when this member wins."""
        with self._election_mutex:
            self._hooks_elected_leader.setdefault(group_id, Hooks()).append(callback)

    def unwatch_elected_as_leader(self, group_id: GroupName,
                                  callback: Callable[[LeaderElected], Any]) -> None:
        """Stop calling ``callback`` (``WatchCallbackNotFound`` when it is not registered).
        Once a group has no callback left this member stops campaigning for it; a term it
        holds goes on until :meth:`stand_down_group_leader`, as in tooz."""
        with self._election_mutex:
            hooks = self._hooks_elected_leader.get(group_id)
            if hooks is None or callback not in hooks:
                raise WatchCallbackNotFound(group_id, callback)
            hooks.remove(callback)
            if not hooks:
                del self._hooks_elected_leader[group_id]

    def run_elect_coordinator(self) -> None:
        """Campaign once, without waiting, in each watched group this member does not lead;
        call the group's callbacks with a :class:`LeaderElected` where it wins. A term the
        backend ended (``lost``) is closed first, so a member that lost leadership can win
        it again."""
        with self._election_mutex:
            watched = [(group_id, Hooks(hooks))
                       for group_id, hooks in self._hooks_elected_leader.items()]
        for group_id, hooks in watched:
            election = self._election(group_id)
            if election.is_leader:
                continue
            _close_lost_term(election)
            with as_tooz_errors():
                won = election.campaign(blocking=False)
            if won:
                hooks.run(LeaderElected(group_id, self._member_id, election))

    def stand_down_group_leader(self, group_id: GroupName) -> bool:
        """End this member's term in ``group_id``: True, or False when it did not lead (or
        had lost its term: that is logged). The next ``run_elect_coordinator()`` campaigns
        again while the group is watched."""
        with self._election_mutex:
            election = self._elections.get(group_bytes(group_id))
        if election is None:
            return False
        try:
            with as_tooz_errors():
                election.resign()
        except conch.LockNotHeld:
            return False
        except conch.LockLost:
            log.warning("leadership of group %r was lost before stand_down_group_leader()",
                        group_id)
            return False
        return True

    def get_leader(self, group_id: GroupName) -> CoordinatorResult[bytes | None]:
        """The leader's member id of ``group_id`` as the server sees it now (``bytes``;
        ``None`` when nobody leads)."""
        def leader() -> bytes | None:
            member = self._election(group_id).leader()
            return None if member is None else member_bytes(member)
        return run_now(leader)

    def _election(self, group_id: GroupName) -> conch.Election:
        """This member's candidate in ``group_id``'s election (one per group and start)."""
        key = group_bytes(group_id)
        with self._election_mutex:
            election = self._elections.get(key)
            if election is None:
                with as_tooz_errors():
                    election = self.conch_coordinator.election(group_id)
                self._elections[key] = election
            return election

    def _forget_terms(self) -> None:
        """The coordinator (re)started: the previous start's candidates ended with it."""
        with self._election_mutex:
            self._elections.clear()


def _close_lost_term(election: conch.Election) -> None:
    """Free ``election`` of a term the backend ended, so that it can campaign again."""
    if election.lost.is_set():  # the loss was logged when the backend ended the term
        with contextlib.suppress(conch.LockLost, conch.LockNotHeld):
            election.resign()
