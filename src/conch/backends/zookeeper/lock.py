"""The ``zookeeper://`` lock handle: an ephemeral sequential child of the lock's znode per
acquire, a watch on the child just before it until it is first, then the hold."""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]
from kazoo.protocol.states import EventType  # type: ignore[import-untyped]

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.zookeeper.session import (
    ConnectionDropped,
    NoAnswer,
    SessionExpired,
    ZooKeeperSession,
)
from conch.errors import BackendUnavailable, LockLost
from conch.introspection import HolderStamp

CHILD = re.compile(r"^[0-9a-f]{32}_(-?[0-9]+)$")  # a unique prefix, then the sequence
_PREFIX = 33
RESTAMP_AFTER = 0.5  # seconds of waiting after which a new holder stamps its grant time
_GIVE_UP = object()  # what a wait's request got: no answer, and the deadline passed
_LOOK_AGAIN = object()  # ... or the connection dropped first: list the queue again


def sequence_distance(sequence: int, mine: int) -> int:
    """How far ``sequence`` is from ``mine`` in creation order (negative: created before),
    as serial numbers: the counter is a signed 32-bit int that wraps."""
    distance = (sequence - mine) & 0xFFFFFFFF
    return distance - (1 << 32) if distance >= 1 << 31 else distance


def sequence(child: str) -> int:
    """The sequence number ZooKeeper appended to our child's name."""
    return int(child[_PREFIX:])


class ZooKeeperLock(LockHandle):
    """The handle of one lock name: each acquire queues a child of its own."""

    def __init__(self, session: ZooKeeperSession, parent: str, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._session = session
        self._client = session.client
        self._parent = parent
        self._stamp = stamp  # the child's data, for `conch show`
        self._on_lost = on_lost
        self._mutex = threading.Lock()  # guards _held against a concurrent loss
        self._held: str | None = None  # the name of our child while it holds the lock
        self._woken = threading.Event()  # by a blocker's watch or a state change
        self._blockers_watched: set[str] = set()  # the paths of the children watched now
        self._blocker_event: Any = None  # the fired watch's event type, None: a state change

    def acquire(self, deadline: Deadline) -> int | None:
        requeued = False
        while True:
            try:
                return self._queue_and_wait(deadline, requeued)
            except SessionExpired:
                if deadline.expired():
                    if requeued:  # a waiter ends on time, queued again or not
                        return None
                    raise
                # Our child went with the old session; queue again in the new one.
                requeued = True

    def _queue_and_wait(self, deadline: Deadline, requeued: bool) -> int | None:
        """Queue a child, wait to be first; its token, or None when the deadline passed
        (also while creating a child to queue again: ``requeued``)."""
        session, parent = self._session, self._parent
        prefix, generation, queued_at = self._new_prefix(), session.generation, time.monotonic()
        # create2's stat carries the token (czxid); the listing, answered after the create,
        # includes our child: a free lock costs one round-trip.
        created = self._client.create_async(f"{parent}/{prefix}", self._stamp.stamp(),
                                            ephemeral=True, sequence=True, makepath=True,
                                            include_data=True)
        listing: Any = self._client.get_children_async(parent)
        try:
            path, stat = session.answer(created, "create a lock node",
                                        deadline.remaining() if requeued else None)
        except BaseException as exc:  # the server may have created it before the connection dropped
            created.rawlink(lambda _: session.abandon(parent, prefix))
            if requeued and isinstance(exc, NoAnswer) and deadline.expired():
                return None
            raise
        name = path.rsplit("/", 1)[1]
        try:
            while True:
                with session.waking(self._woken):
                    first = self._wait_until_first(name, deadline, listing)
                if not first:
                    # Not awaited, so that a timed wait ends on time even with the server gone.
                    self._client.delete_async(path).rawlink(
                        lambda result: self._abandon_unless_deleted(result, prefix))
                    return None
                with self._mutex:
                    if session.keep(session.holds, self, self._lost, generation):
                        self._held = name
                        if time.monotonic() - queued_at > RESTAMP_AFTER:  # not awaited
                            self._client.set_async(path, self._stamp.stamp())
                        # A deletion by someone else (conch break) is a loss.
                        session.watch_soon(self, lambda: session.on_deletion(
                            path, lambda: self._own_node_gone(path)))
                        return int(stat.czxid)
                if session.generation != generation:
                    raise SessionExpired(f"the ZooKeeper session at {session.hosts} expired")
                listing = None  # the connection dropped: look again once it is back
        except BaseException:
            session.abandon(parent, prefix)
            raise

    def release(self) -> None:
        with self._mutex:
            name, self._held = self._held, None
        self._session.holds.discard(self)
        if name is None:  # lost just now, its report maybe not delivered yet
            raise LockLost("the ZooKeeper connection or session broke before the release; "
                           "the lock node is deleted once reconnected")
        try:
            self._session.answer(self._client.delete_async(f"{self._parent}/{name}"),
                                 "delete the lock node")
        except NoNodeError:  # expired or deleted before the session noticed: say so
            raise LockLost(f"the lock node {name} was gone at release") from None
        except BaseException as exc:
            self._session.abandon(self._parent, name[:_PREFIX])
            if isinstance(exc, BackendUnavailable):  # a hold we cannot see is lost
                raise LockLost(f"lock node {name} not deleted, the hold is lost: {exc}") from None
            raise

    def _new_prefix(self) -> str:
        """The unique start of a new child's name (``_PREFIX`` characters)."""
        return f"{uuid.uuid4().hex}_"

    def _blockers(self, before: list[str]) -> list[str]:
        """The children whose deletion we wait for (none: the hold is ours), of ``before``,
        the older children, oldest first: an exclusive hold waits for its predecessor."""
        return before[-1:]

    def _wait_until_first(self, name: str, deadline: Deadline, listing: Any) -> bool:
        """Wait until child ``name`` may hold; False once the deadline passed. ``listing``
        (a ``get_children`` already sent) is always awaited: every acquire tries once."""
        mine = sequence(name)
        within = None if listing is not None else deadline.remaining()
        while True:
            pipelined, listing = listing, None
            try:
                children = self._answer(
                    pipelined or self._client.get_children_async(self._parent),
                    "list the lock queue", deadline, within)
            except NoNodeError:  # listed before kazoo created the znode for our create
                children = []
            if children is _GIVE_UP:
                return False
            if children is _LOOK_AGAIN:
                continue
            if name not in children:
                if pipelined is not None:  # as above, with the znode made by someone else
                    continue
                # The znode is never deleted while it has children.
                raise SessionExpired(f"the ZooKeeper session at {self._session.hosts} "
                                     "expired while waiting")
            older = sorted((distance, child) for child in children if CHILD.match(child)
                           if (distance := sequence_distance(sequence(child), mine)) < 0)
            before = [child for _, child in older]
            blockers = self._blockers(before)
            if not blockers:
                return True
            if deadline.expired():
                return False
            # Each request gets the time left, so a timed wait ends on time through an outage.
            outcome = self._watch_until_deleted(
                [f"{self._parent}/{child}" for child in blockers], deadline)
            if outcome is _GIVE_UP:
                return False
            # Sequences only grow: with the only older child gone, we are first.
            if outcome is True and len(before) == 1:
                return True
            within = deadline.remaining()

    def _watch_until_deleted(self, blockers: list[str], deadline: Deadline) -> object:
        """Wait for the deletion of one of ``blockers``: True when seen, :data:`_LOOK_AGAIN`
        when woken by a change of connection state, :data:`_GIVE_UP` at the deadline."""
        while True:
            self._woken.clear()  # before the watches: a deletion in between wakes us
            self._blockers_watched, self._blocker_event = set(blockers), None
            watches = [self._client.exists_async(path, watch=self._wake) for path in blockers]
            for watch in watches:
                exists = self._answer(watch, "watch the lock holder", deadline,
                                      deadline.remaining())
                if exists is None:
                    return True
                if exists is _GIVE_UP or exists is _LOOK_AGAIN:
                    return exists
            if not self._woken.wait(deadline.remaining()):
                return _GIVE_UP
            if self._blocker_event == EventType.DELETED:
                return True
            if self._blocker_event != EventType.CHANGED:
                return _LOOK_AGAIN
            # Its data changed (restamped on taking the lock): watch it again.

    def _answer(self, request: Any, doing: str, deadline: Deadline, within: float | None) -> Any:
        """A wait's request answered; :data:`_GIVE_UP` when none came by the deadline,
        :data:`_LOOK_AGAIN` when the connection dropped first (our child may live on)."""
        try:
            return self._session.answer(request, doing, within)
        except NoAnswer:
            if deadline.expired():
                return _GIVE_UP
            raise
        except ConnectionDropped:
            if deadline.expired():
                raise
            return _LOOK_AGAIN

    def _wake(self, event: Any) -> None:
        if event.path in self._blockers_watched:  # not a watch left by an earlier wait
            self._blocker_event = event.type
            self._woken.set()

    def _own_node_gone(self, path: str) -> None:
        with self._mutex:
            ours = self._held is not None and path == f"{self._parent}/{self._held}"
        if ours:  # not released by us: someone deleted it
            self._session.holds.lose(self, "its lock node was deleted (conch break, or by "
                                     "hand): another client may take the lock")

    def _lost(self, reason: str) -> None:
        with self._mutex:
            name, self._held = self._held, None
        if name is not None:
            self._session.abandon(self._parent, name[:_PREFIX])
        self._on_lost(reason)

    def _abandon_unless_deleted(self, result: Any, prefix: str) -> None:
        if not result.successful() and not isinstance(result.exception, NoNodeError):
            self._session.abandon(self._parent, prefix)
