"""The ``zookeeper://`` lock handle: a place in a lock's queue, the wait to be first, the hold.

How the queue stands for the lock (children, sequence numbers, tokens) is told in
:mod:`conch.backends.zookeeper.backend`; this module is that recipe's client side. An acquire
creates an ephemeral sequential child ``<32 hex>_<sequence>`` and lists the queue in
one round-trip, then watches its immediate predecessor until it is first or the
deadline passes; a holder watches its own child, so a deletion by someone else
(``conch break``) is reported as a loss. Children that could not be deleted are left
to :class:`~conch.backends.zookeeper.session.ZooKeeperSession`'s clean-up.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
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

CHILD = re.compile(r"^([0-9a-f]{32}_)(-?[0-9]+)$")
"""A queue place's name: its unique prefix, then the sequence number ZooKeeper appended."""

_GIVE_UP = object()  # what a wait's request got: no answer, and the deadline passed
_LOOK_AGAIN = object()  # ... or the connection dropped first


def sequence_distance(sequence: int, mine: int) -> int:
    """How far ``sequence`` is from ``mine`` in creation order (negative: created before).

    The parent's sequence counter is a signed 32-bit int that wraps to negative
    after 2147483647 (ZooKeeper Programmer's Guide, "Sequence Nodes"), so compare
    as serial numbers: the children alive at once are far fewer than 2**31 apart.
    """
    distance = (sequence - mine) & 0xFFFFFFFF
    return distance - (1 << 32) if distance >= 1 << 31 else distance


class ZooKeeperLock(LockHandle):
    """The handle of one lock name: each acquire queues a child of its own."""

    def __init__(
        self, session: ZooKeeperSession, parent: str, stamp: HolderStamp, on_lost: LossCallback
    ) -> None:
        self._session = session
        self._client = session.client
        self._parent = parent
        self._stamp = stamp  # the child's data: who holds it, for `conch show`
        self._on_lost = on_lost
        self._mutex = threading.Lock()  # guards _held against a concurrent loss
        self._held: str | None = None  # the name of our child while it holds the lock
        self._predecessor_gone = threading.Event()
        self._waited = False  # the current acquire found the lock held

    def acquire(self, deadline: Deadline) -> int | None:
        while True:
            try:
                return self._queue_and_wait(deadline)
            except SessionExpired:
                if deadline.expired():
                    raise
                # Our znode went with the old session; queue again in kazoo's new one.

    def _queue_and_wait(self, deadline: Deadline) -> int | None:
        """Queue a child, wait to be first; its token, or None when the deadline passed."""
        session = self._session
        prefix = f"{uuid.uuid4().hex}_"
        generation = session.generation
        # create2 returns the new child's stat: its czxid is the token, at no extra round-trip.
        self._waited = False
        created = self._client.create_async(
            f"{self._parent}/{prefix}", self._stamp.stamp(),
            ephemeral=True, sequence=True, makepath=True, include_data=True,
        )
        # ZooKeeper answers a session's requests in order, so a listing sent right
        # behind the create already holds our child: taking a free lock costs one
        # round-trip (and releasing it one more).
        listing: Any = self._client.get_children_async(self._parent)
        try:
            path, stat = session.answer(created, "create a lock node")
        except BaseException:
            session.abandon_when_answered(created, self._parent, prefix)
            raise
        name = path.rsplit("/", 1)[1]
        try:
            first_look = True
            while True:
                if not self._wait_until_first(name, deadline, first_look, listing):
                    # Not awaited, so a timed wait ends on time even when the server is gone.
                    self._client.delete_async(path).rawlink(self._abandon_on_failure(prefix))
                    return None
                with self._mutex:
                    if session.hold(self, self._lost, generation):
                        self._held = name
                        self._watch_own_node(path)
                        return int(stat.czxid)
                if session.generation != generation:
                    raise SessionExpired(f"the ZooKeeper session at {session.hosts} expired")
                # The connection dropped after we saw we were first: look again once
                # it is back (the session, and so our place, may have survived).
                first_look, listing = False, None
        except BaseException:
            session.abandon(self._parent, prefix)
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
        except BackendUnavailable as exc:
            # No connection (or the session expired): the hold counts as lost, as on
            # SUSPENDED (see zookeeper.session); the node is deleted once reconnected.
            self._session.abandon(self._parent, _prefix(name))
            raise LockLost(f"lock node {name} not deleted, the hold is lost: {exc}") from None
        except BaseException:
            self._session.abandon(self._parent, _prefix(name))
            raise

    def _wait_until_first(
        self, name: str, deadline: Deadline, first_look: bool, listing: Any
    ) -> bool:
        """Wait until child ``name`` is first in line; False once the deadline passed.

        ``listing`` is a ``get_children`` request already sent, or ``None``. The first
        look at the queue always gets its answer (every acquire tries once).
        """
        with self._session.waking(self._predecessor_gone):
            return self._watch_predecessors(
                name, deadline, None if first_look else deadline.remaining(), listing
            )

    def _watch_predecessors(
        self, name: str, deadline: Deadline, within: float | None, listing: Any
    ) -> bool:
        mine = _sequence(name)
        while True:
            pipelined, listing = listing, None
            try:
                request = (self._client.get_children_async(self._parent)
                           if pipelined is None else pipelined)
                children = self._answer(request, "list the lock queue", deadline, within)
            except NoNodeError:
                if pipelined is None:  # the name's znode is never deleted while it has children
                    raise SessionExpired(
                        f"the ZooKeeper session at {self._session.hosts} expired while waiting"
                    ) from None
                continue  # listed before kazoo created the name's znode for our create
            if children is _GIVE_UP:
                return False
            if children is _LOOK_AGAIN:
                continue
            if name not in children:
                if pipelined is not None:  # as above, with the znode made by someone else
                    continue
                raise SessionExpired(
                    f"the ZooKeeper session at {self._session.hosts} expired while waiting"
                )
            before = [
                (distance, child) for child in children if CHILD.match(child)
                if (distance := sequence_distance(_sequence(child), mine)) < 0
            ]
            if not before:
                return True
            self._waited = True
            if deadline.expired():
                return False
            # From now on a timed wait gives each request the time it has left, so
            # it ends on time through an outage; a wait forever gives each the
            # session timeout, and fails when the server stays away longer.
            within = deadline.remaining()
            predecessor = max(before)[1]
            self._predecessor_gone.clear()  # before the watch: a deletion in between wakes us
            exists = self._answer(
                self._client.exists_async(f"{self._parent}/{predecessor}", watch=self._wake),
                "watch the lock holder", deadline, within,
            )
            if exists is _GIVE_UP:
                return False
            if exists is _LOOK_AGAIN:
                continue
            if exists is not None and not self._predecessor_gone.wait(deadline.remaining()):
                return False
            within = deadline.remaining()

    def _answer(self, request: Any, doing: str, deadline: Deadline, within: float | None) -> Any:
        """The answer to a request of a wait; :data:`_GIVE_UP` when none came by the
        deadline, :data:`_LOOK_AGAIN` when the connection dropped before it (our znode
        may live on in the session: look at the queue again once reconnected)."""
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
        self._predecessor_gone.set()

    def _watch_own_node(self, path: str) -> None:
        """Hear of our child's deletion by someone else (``conch break``) as a loss.

        Sent without waiting for answers: taking the lock costs no extra round-trip.
        A holder that waited first restamps its child with the time it got the lock;
        the server answers in order, so that write cannot trigger the watch.
        """
        if self._waited:
            self._client.set_async(path, self._stamp.stamp())
        self._client.exists_async(path, watch=self._own_node_event).rawlink(
            lambda result: self._own_node_checked(path, result))

    def _own_node_checked(self, path: str, result: Any) -> None:
        if result.successful() and result.value is None:  # deleted before the watch was set
            self._own_node_gone(path)

    def _own_node_event(self, event: Any) -> None:
        if event.type == EventType.DELETED:
            self._own_node_gone(event.path)

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
            self._session.abandon(self._parent, _prefix(name))
        self._on_lost(reason)

    def _abandon_on_failure(self, prefix: str) -> Callable[[Any], None]:
        def check(result: Any) -> None:
            if not result.successful() and not isinstance(result.exception, NoNodeError):
                self._session.abandon(self._parent, prefix)
        return check


def _prefix(child: str) -> str:
    """The unique part of our child's name (what precedes the sequence number)."""
    match = CHILD.match(child)
    return match.group(1) if match else child


def _sequence(child: str) -> int:
    match = CHILD.match(child)
    return int(match.group(2)) if match else 0
