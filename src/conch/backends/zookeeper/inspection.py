"""Who holds the ``zookeeper://`` locks (the first child of a lock's znode: its data the
stamp, its stat the token), and breaking a hold by deleting that child."""

from __future__ import annotations

from typing import Any

from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]

from conch.backends.zookeeper.lock import CHILD, sequence, sequence_distance
from conch.backends.zookeeper.session import ZooKeeperSession
from conch.introspection import HolderChanged, HolderInfo, LockInfo, has_hold_to_break, read_stamp

_BATCH = 200  # listing reads sent at once, answered in order: a few hundred locks at a time


def describe(session: ZooKeeperSession, parent: str, key: bytes) -> tuple[LockInfo, str | None]:
    """Lock ``key``, whose znode is ``parent``, and the path of its holder's child."""
    for _ in range(3):  # the holder may leave between the listing and the read
        queue = _queue(_answer(session, session.client.get_children_async(parent), []))
        if not queue:
            break
        path = f"{parent}/{queue[0]}"
        data, stat = _answer(session, session.client.get_async(path), (None, None))
        if stat is not None:
            return LockInfo(key, _holder(data, stat), len(queue) - 1), path
    return LockInfo(key, None, 0), None


def held_locks(session: ZooKeeperSession, locks_path: str) -> list[LockInfo]:
    """Every lock held now under ``locks_path``."""
    names = _answer(session, session.client.get_children_async(locks_path), [])
    found = []
    for start in range(0, len(names), _BATCH):
        paths = [f"{locks_path}/{name}" for name in names[start: start + _BATCH]]
        listings = [(path, session.client.get_children_async(path)) for path in paths]
        readings = [(session.client.get_async(f"{path}/{queue[0]}"), len(queue) - 1)
                    for path, listing in listings
                    if (queue := _queue(_answer(session, listing, [])))]
        for reading, waiters in readings:
            data, stat = _answer(session, reading, (None, None))  # None: released meanwhile
            if stat is not None and (stamp := read_stamp(data)) is not None:
                found.append(LockInfo(stamp.key, _holder(data, stat), waiters))
    return found


def break_hold(session: ZooKeeperSession, parent: str, key: bytes, token: int | None) -> LockInfo:
    """Delete the holder's child of lock ``key`` (only the one with ``token``, if given)."""
    lock, path = describe(session, parent, key)
    if not has_hold_to_break(lock, token) or path is None:
        return lock
    try:
        # The child's name is unique to this hold: deleting it never ends another.
        session.answer(session.client.delete_async(path), "delete the lock holder")
    except NoNodeError:
        raise HolderChanged(f"lock {lock.name!r} was released while being broken") from None
    return lock


def _answer(session: ZooKeeperSession, request: Any, missing: Any) -> Any:
    """The answer to a read, or ``missing`` when its znode does not exist (any more)."""
    try:
        return session.answer(request, "read the locks")
    except NoNodeError:
        return missing


def _queue(children: list[str]) -> list[str]:
    """The lock's children in queue order, the holder first (see sequence_distance)."""
    ours = [child for child in children if CHILD.match(child)]
    return sorted(ours, key=lambda child: sequence_distance(sequence(child), sequence(ours[0])))


def _holder(data: bytes, stat: Any) -> HolderInfo:
    session = f"0x{stat.ephemeralOwner:x}"
    stamp = read_stamp(data)
    if stamp is None:  # a child from before stamps: its data was the member id
        member = data.decode("utf-8", "replace") or None
        return HolderInfo(member_id=member, acquired_at=stat.mtime / 1000,
                          token=stat.czxid, session=session)
    return stamp.holder(token=stat.czxid, session=session)
