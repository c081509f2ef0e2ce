"""Who holds the ``zookeeper://`` locks (the first child of a lock's znode: its data the
stamp, its stat the token), and breaking a hold by deleting that child."""

from __future__ import annotations

from typing import Any

from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]

from conch.backends.zookeeper.lock import CHILD, sequence, sequence_distance
from conch.backends.zookeeper.session import ZooKeeperSession
from conch.introspection import HolderChanged, HolderInfo, LockInfo, has_hold_to_break, read_stamp

_BATCH = 200  # listing reads, sent at once and answered in order: a few hundred locks at a time


def describe(session: ZooKeeperSession, parent: str, key: bytes) -> tuple[LockInfo, str | None]:
    """Lock ``key``, whose znode is ``parent``, and the path of its holder's child."""
    for _ in range(3):  # the holder may leave between the listing and the read
        try:
            queue = _queue(session.answer(session.client.get_children_async(parent),
                                          "list the lock queue"))
        except NoNodeError:
            break
        if not queue:
            break
        path = f"{parent}/{queue[0]}"
        try:
            data, stat = session.answer(session.client.get_async(path), "read the lock holder")
        except NoNodeError:
            continue
        return LockInfo(key, _holder(data, stat), len(queue) - 1), path
    return LockInfo(key, None, 0), None


def held_locks(session: ZooKeeperSession, locks_path: str) -> list[LockInfo]:
    """Every lock held now under ``locks_path``."""
    try:
        names = session.answer(session.client.get_children_async(locks_path), "list the locks")
    except NoNodeError:
        return []
    found = []
    for start in range(0, len(names), _BATCH):
        batch = [f"{locks_path}/{name}" for name in names[start: start + _BATCH]]
        listings = [session.client.get_children_async(path) for path in batch]
        holders = []
        for path, listing in zip(batch, listings, strict=True):
            try:
                queue = _queue(session.answer(listing, "list a lock queue"))
            except NoNodeError:
                continue
            if queue:
                holders.append((session.client.get_async(f"{path}/{queue[0]}"), len(queue) - 1))
        for reading, waiters in holders:
            try:
                data, stat = session.answer(reading, "read a lock holder")
            except NoNodeError:  # released meanwhile
                continue
            stamp = read_stamp(data)
            if stamp is not None:
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


def _queue(children: list[str]) -> list[str]:
    """The lock's children in queue order (the holder first): as distances from any one of
    them, since children alive at once are far fewer than half the counter apart."""
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
