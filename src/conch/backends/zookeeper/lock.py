"""The ``zookeeper://`` lock handle: an ephemeral sequential child of the lock's znode per
acquire, a watch on a child ahead until none blocks it, then the hold. Shared holds and
semaphore permits differ only in the child's name and the children they wait for."""

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
from conch.errors import BackendUnavailable, LimitMismatch, LockLost
from conch.introspection import HolderStamp

CHILD = re.compile(r"^[0-9a-f]{32}_(-?[0-9]+)$")  # a unique prefix, then the sequence
_PREFIX = 33
_KIND = 12  # where a child's name tells its kind: a uuid4's version digit, 4 if exclusive
_LIMIT_DIGITS = 12  # a permit's name starts with its limit in as many hex digits
MAX_LIMIT = 16 ** _LIMIT_DIGITS - 1
RESTAMP_AFTER = 0.5  # seconds of waiting after which a new holder stamps its grant time


def sequence_distance(sequence: int, mine: int) -> int:
    """``sequence`` - ``mine`` as serial numbers (the counter is a signed 32-bit int)."""
    distance = (sequence - mine) & 0xFFFFFFFF
    return distance - (1 << 32) if distance >= 1 << 31 else distance


def sequence(child: str) -> int:
    """The sequence number ZooKeeper appended to our child's name."""
    return int(child[_PREFIX:])


class ZooKeeperLock(LockHandle):
    """The handle of lock ``key``: each acquire queues a child of its own. ``shared``: a
    shared hold; ``limit``: a permit of a semaphore with that limit."""

    def __init__(self, session: ZooKeeperSession, parent: str, key: bytes, member_id: str,
                 on_lost: LossCallback, shared: bool = False, limit: int | None = None) -> None:
        if limit is not None and limit > MAX_LIMIT:
            raise ValueError(f"a zookeeper:// semaphore's limit is at most {MAX_LIMIT}")
        self._session, self._client, self._parent = session, session.client, parent
        self._key, self._shared, self._limit = key, shared, limit
        self._stamp, self._on_lost = HolderStamp(key, member_id), on_lost  # the child's data
        self._mutex = threading.Lock()  # guards _held against a concurrent loss
        self._held: str | None = None  # the name of our child while it holds the lock
        self._woken = threading.Event()  # by a blocker's watch or a state change
        self._watched: set[str] = set()  # the paths of the children watched now
        self._event: Any = None  # the fired watch's event type, None: a state change

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
        """Queue a child, wait for its turn: its token, or None past the deadline."""
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
                if not self._wait_turn(name, deadline, listing):
                    # Not awaited, so that a timed wait ends on time even with the server gone.
                    self._client.delete_async(path).rawlink(
                        lambda result: self._abandon_unless_deleted(result, prefix))
                    return None
                with self._mutex:
                    if session.keep(session.holds, self, self._lost, generation):
                        self._held = name
                        break
                if session.generation != generation:
                    raise SessionExpired(f"the ZooKeeper session at {session.hosts} expired")
                listing = None  # the connection dropped: look again once it is back
        except BaseException:
            session.abandon(parent, prefix)
            raise
        if time.monotonic() - queued_at > RESTAMP_AFTER:  # not awaited
            self._client.set_async(path, self._stamp.stamp())
        # A deletion by someone else (conch break) is a loss.
        session.watch_soon(self, lambda: session.on_deletion(path, lambda: self._gone(name)))
        return int(stat.czxid)

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
        """The unique start of a new child's name (``_PREFIX`` characters), with its kind."""
        unique = uuid.uuid4().hex
        if self._limit is not None:
            return f"{self._limit:0{_LIMIT_DIGITS}x}{unique[_LIMIT_DIGITS:]}_"
        return f"{unique[:_KIND]}0{unique[_KIND + 1:]}_" if self._shared else f"{unique}_"

    def _blockers(self, before: list[str]) -> list[str]:
        """Of the older children (oldest first), those we wait for; none: the hold is ours."""
        if self._shared:  # the newest older exclusive child
            return [child for child in before if child[_KIND] != "0"][-1:]
        if self._limit is None:
            return before[-1:]
        # An older child with another limit: its holders use that one (or it is about to
        # find ours and give up); either way the two must not mix.
        for child in before:
            if (limit := int(child[:_LIMIT_DIGITS], 16)) != self._limit:
                raise LimitMismatch(f"semaphore {self._key!r} is in use with limit "
                                    f"{limit}, not {self._limit}")
        return before[:self._limit] if len(before) >= self._limit else []

    def _wait_turn(self, name: str, deadline: Deadline, listing: Any) -> bool:
        """Wait until child ``name`` may hold; False once the deadline passed. ``listing`` (a
        ``get_children`` sent with the create) is awaited in full: every acquire tries once."""
        mine, within = sequence(name), None if listing is not None else deadline.remaining()
        while True:
            pipelined, listing = listing, None
            try:
                children = self._session.read(  # []: listed before makepath made the znode
                    pipelined or self._client.get_children_async(self._parent),
                    "list the lock queue", [], within)
                if name not in children:
                    if pipelined is not None:  # ... or another client made it
                        continue
                    # The znode is never deleted while it has children.
                    raise SessionExpired(f"the ZooKeeper session at {self._session.hosts} "
                                         "expired while waiting")
                older = sorted((distance, child) for child in children if CHILD.match(child)
                               if (distance := sequence_distance(sequence(child), mine)) < 0)
                blockers = self._blockers([child for _, child in older])
                if not blockers:
                    return True
                if deadline.expired():
                    return False
                deleted = self._until_deleted({f"{self._parent}/{child}" for child in blockers},
                                              deadline)
                # Sequences only grow: with the only older child gone, we are first.
                if deleted and len(older) == 1:
                    return True
                if not deleted and deadline.expired():
                    return False
                within = deadline.remaining()
            except NoAnswer:  # each request gets the time left: a timed wait ends on time
                if deadline.expired():
                    return False
                raise
            except ConnectionDropped:  # our child may live on: list the queue again
                if deadline.expired():
                    raise

    def _until_deleted(self, blockers: set[str], deadline: Deadline) -> bool:
        """Wait for one of ``blockers`` to go: False at the deadline or a state change."""
        self._client.add_listener(self._wake_on_state)
        try:
            while True:
                self._woken.clear()  # before the watches: a deletion in between wakes us
                self._watched, self._event = blockers, None
                watches = [self._client.exists_async(path, watch=self._wake) for path in blockers]
                if any(self._session.answer(watch, "watch the lock holder", deadline.remaining())
                       is None for watch in watches):
                    return True
                if not self._woken.wait(deadline.remaining()) or \
                        self._event != EventType.CHANGED:
                    return bool(self._event == EventType.DELETED)
                # Its data changed (restamped on taking the lock): watch it again.
        finally:
            self._client.remove_listener(self._wake_on_state)

    def _wake(self, event: Any) -> None:
        if event.path in self._watched:  # not a watch left by an earlier wait
            self._event = event.type
            self._woken.set()

    def _wake_on_state(self, state: str) -> None:
        self._woken.set()  # a change of connection state

    def _gone(self, name: str) -> None:
        if self._held == name:  # not released by us: someone deleted it
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
