"""Who holds the ``etcd://`` locks (the oldest key of each queue, its value the holder's
stamp, its lease the session), and breaking a hold by deleting the holder's key: the next
waiter takes the lock, the holder's session reports the loss at its next beat."""

from __future__ import annotations

from conch.backends.etcd.client import Gateway, Message, decode, encode, keys_under
from conch.introspection import HolderChanged, HolderInfo, LockInfo, has_hold_to_break, read_stamp


def describe(gateway: Gateway, queue: bytes, name: bytes) -> tuple[LockInfo, Message | None]:
    """Lock ``name``, whose keys are under ``queue``, and its holder's key-value."""
    # Sorted, then cut to one key; "count" is every key of the range all the same.
    answer = gateway.call("/v3/kv/range", keys_under(queue, sort_order="ASCEND",
                                                     sort_target="CREATE", limit="1"))
    kvs = answer.get("kvs", [])
    if not kvs:
        return LockInfo(name, None, 0), None
    waiters = max(0, int(answer.get("count", "1")) - 1)
    return LockInfo(name, _holder(gateway, kvs[0]), waiters), kvs[0]


def held_locks(gateway: Gateway, prefix: bytes) -> list[LockInfo]:
    """Every lock held now under ``prefix``: the oldest key of each queue."""
    # Queues are named by hex digests: from "<prefix>/0" to "<prefix>/f..." and no further,
    # leaving out the groups and the semaphores beside them (etcd/groups.py, etcd/backend.py).
    answer = gateway.call("/v3/kv/range", {"key": encode(prefix + b"/0"),
                                           "range_end": encode(prefix + b"/g")})
    queues: dict[bytes, list[Message]] = {}
    for kv in answer.get("kvs", []):
        queues.setdefault(decode(kv["key"]).rpartition(b"/")[0], []).append(kv)
    found = []
    for kvs in queues.values():
        first = min(kvs, key=lambda kv: int(kv["create_revision"]))
        stamp = read_stamp(decode(first.get("value", "")))
        if stamp is not None:
            found.append(LockInfo(stamp.key, _holder(gateway, first), len(kvs) - 1))
    return found


def break_hold(gateway: Gateway, queue: bytes, name: bytes, token: int | None) -> LockInfo:
    """Delete the holder's key of lock ``name`` (only the one with ``token``, if given)."""
    lock, kv = describe(gateway, queue, name)
    if not has_hold_to_break(lock, token) or kv is None:
        return lock
    answer = gateway.txn(
        compare=[{"key": kv["key"], "target": "CREATE", "result": "EQUAL",
                  "create_revision": kv["create_revision"]}],
        success=[{"request_delete_range": {"key": kv["key"]}}],
    )
    if not answer.get("succeeded"):
        raise HolderChanged(f"lock {lock.name!r} was released while being broken")
    return lock


def _holder(gateway: Gateway, kv: Message) -> HolderInfo:
    lease = int(kv.get("lease", "0"))
    ttl = gateway.lease_ttl(lease)[1] if lease else -1
    known = {"token": int(kv["create_revision"]), "ttl_left": float(ttl) if ttl >= 0 else None,
             "session": f"{lease:x}" if lease else None}
    stamp = read_stamp(decode(kv.get("value", "")))
    if stamp is None:  # a key from before stamps: its value was the member id
        member = decode(kv.get("value", "")).decode("utf-8", "replace") or None
        return HolderInfo(member_id=member, **known)  # type: ignore[arg-type]
    return stamp.holder(**known)
