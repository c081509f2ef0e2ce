"""``zookeeper://host:port[,host:port...]/chroot?timeout=10&connect_timeout=5``: ZooKeeper locks.

Translation of the contract (the session lives in :mod:`conch.backends.zookeeper_session`):

* **name**: ``<chroot>/locks/<readable>.<sha256 hex>``, one persistent znode per
  lock name (znode names cannot hold ``/`` or arbitrary bytes). It is never
  deleted by conch; an empty one may be removed by an operator at any time.
* **queue place**: an ephemeral sequential child ``<32 hex>_<sequence>``, one per
  acquire, whose random prefix lets us find a child whose ``create`` gave no
  answer. Each lock object creates its own, so two objects of one session exclude
  each other like two processes.
* **hold**: the child with the lowest sequence number holds the lock. A waiter
  watches only its immediate predecessor (``exists`` watch), so a release wakes one
  waiter, in the order they queued (FIFO, no herd).
* **timed wait**: the waiter waits on the watch for the remaining time; on timeout
  or error it deletes its own child (asynchronously, or through the session's
  clean-up when disconnected), so nothing is left behind.
* **fencing token**: the ``czxid`` of the holder's child, ZooKeeper's transaction
  id of its creation. Zxids increase across every write of the ensemble, so tokens
  keep increasing across holders, client restarts and a re-created parent. Only
  a wiped data directory (a new ensemble) starts them again from zero.
* **introspection** (``conch show``, ``conch break``): :mod:`conch.backends.zookeeper_inspection`.
* **loss**: see :mod:`conch.backends.zookeeper_session` (SUSPENDED and LOST both).

``timeout`` is the session timeout (seconds, default 10; the server clamps it to
2 to 20 ``tickTime``): a holder that dies without closing its session keeps its lock
that long, hence ``session_bound=False``. ``connect_timeout`` (default 5) bounds
``start()``. ``user:password@`` authenticates with ZooKeeper's ``digest`` scheme.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]
from kazoo.protocol.states import EventType  # type: ignore[import-untyped]

from conch.backends import zookeeper_inspection
from conch.backends.base import Backend, Deadline, LockHandle, LossCallback
from conch.backends.zookeeper_session import NoAnswer, SessionExpired, ZooKeeperSession
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, InvalidURL, LockLost
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

DEFAULT_PORT = 2181
DEFAULT_ROOT = "/conch"
_READABLE = re.compile(rb"[^A-Za-z0-9_-]+")
_CHILD = re.compile(r"^([0-9a-f]{32}_)(-?[0-9]+)$")
# Characters ZooKeeper refuses in a path (its Programmer's Guide, "ZNodes").
_BAD_PATH_CHARS = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]")


def lock_parent_name(key: bytes) -> str:
    """The znode name of lock ``key``: a readable prefix and its SHA-256 in hex."""
    readable = _READABLE.sub(b"_", key[:48]).decode("ascii")
    return f"{readable}.{hashlib.sha256(key).hexdigest()}"


def sequence_distance(sequence: int, mine: int) -> int:
    """How far ``sequence`` is from ``mine`` in creation order (negative: created before).

    The parent's sequence counter is a signed 32-bit int that wraps to negative
    after 2147483647 (ZooKeeper Programmer's Guide, "Sequence Nodes"), so compare
    as serial numbers: the children alive at once are far fewer than 2**31 apart.
    """
    distance = (sequence - mine) & 0xFFFFFFFF
    return distance - (1 << 32) if distance >= 1 << 31 else distance


class ZooKeeperBackend(Backend):
    """Locks in a ZooKeeper ensemble; one ZooKeeper session per coordinator."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=True, notify=True,
        shared_locks=False, distributed=True, introspection=True, breakable=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        url.options({"timeout", "connect_timeout"})
        if not url.hosts:
            raise InvalidURL(f"zookeeper:// URLs need at least one host[:port]: {url}")
        if url.username is not None and url.password is None:
            raise InvalidURL(f"zookeeper:// credentials need user:password@ (digest): {url}")
        self.locks_path = f"{_chroot(url)}/locks"
        hosts = ",".join(
            f"[{host}]:{port or DEFAULT_PORT}" if ":" in host else f"{host}:{port or DEFAULT_PORT}"
            for host, port in url.hosts
        )
        credentials = None if url.password is None else (url.username or "", url.password)
        self.session = ZooKeeperSession(
            hosts,
            session_timeout=url.float_option("timeout", 10.0),
            connect_timeout=url.float_option("connect_timeout", 5.0),
            credentials=credentials,
        )

    def connect(self) -> None:
        self.session.open(self.locks_path)

    def close(self) -> None:
        self.session.close()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        parent = f"{self.locks_path}/{lock_parent_name(key)}"
        return _ZooKeeperLock(self.session, parent, HolderStamp(key, self.member_id), on_lost)

    def describe_lock(self, key: bytes) -> LockInfo:
        parent = f"{self.locks_path}/{lock_parent_name(key)}"
        return zookeeper_inspection.describe(self.session, parent, key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        return zookeeper_inspection.held_locks(self.session, self.locks_path)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        parent = f"{self.locks_path}/{lock_parent_name(key)}"
        return zookeeper_inspection.break_hold(self.session, parent, key, token)


class _ZooKeeperLock(LockHandle):
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
        if name is None:  # lost: the session deletes the child once it can
            return
        try:
            self._session.answer(self._client.delete_async(f"{self._parent}/{name}"),
                                 "delete the lock node")
        except NoNodeError:  # expired or deleted before the session noticed: say so
            raise LockLost(f"the lock node {name} was gone at release") from None
        except BackendUnavailable as exc:
            # No connection (or the session expired): the hold counts as lost, as on
            # SUSPENDED (see zookeeper_session); the node is deleted once reconnected.
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
                children = self._session.answer(request, "list the lock queue", within)
            except NoAnswer:
                if deadline.expired():
                    return False
                raise
            except NoNodeError:
                if pipelined is None:  # the name's znode is never deleted while it has children
                    raise SessionExpired(
                        f"the ZooKeeper session at {self._session.hosts} expired while waiting"
                    ) from None
                continue  # listed before kazoo created the name's znode for our create
            if name not in children:
                if pipelined is not None:  # as above, with the znode made by someone else
                    continue
                raise SessionExpired(
                    f"the ZooKeeper session at {self._session.hosts} expired while waiting"
                )
            before = [
                (distance, child) for child in children if _CHILD.match(child)
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
            try:
                exists = self._session.answer(
                    self._client.exists_async(f"{self._parent}/{predecessor}", watch=self._wake),
                    "watch the lock holder", within,
                )
            except NoAnswer:
                if deadline.expired():
                    return False
                raise
            if exists is not None and not self._predecessor_gone.wait(deadline.remaining()):
                return False
            within = deadline.remaining()

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
    match = _CHILD.match(child)
    return match.group(1) if match else child


def _sequence(child: str) -> int:
    match = _CHILD.match(child)
    return int(match.group(2)) if match else 0


def _chroot(url: BackendURL) -> str:
    """The URL's path as a ZooKeeper path (``/conch`` when empty)."""
    path = url.path.rstrip("/")
    if not path:
        return DEFAULT_ROOT
    parts = path.split("/")[1:]
    if any(part in ("", ".", "..") for part in parts) or _BAD_PATH_CHARS.search(path):
        raise InvalidURL(f"not a valid ZooKeeper path: {path!r} in {url}")
    if parts[0] == "zookeeper":
        raise InvalidURL(f"/zookeeper is reserved by ZooKeeper: {url}")
    return path
