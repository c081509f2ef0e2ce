"""``etcd://`` groups: a group is a key, a member a key on the session's lease, and one watch
on the member keys pushes the changes (docs/etcd.md, *Groups*)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from conch.backends.base import Deadline, GroupStore, LossCallback
from conch.backends.etcd.client import created, decode, encode, keys_under
from conch.backends.etcd.session import EtcdSession, Hold
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.group_subscribers import GroupSubscribers, Wake
from conch.backends.kit.naming import readable_key
from conch.errors import BackendUnavailable, GroupNotEmpty, GroupNotFound

log = logging.getLogger("conch")

# Under the URL's prefix, beside the lock queues (named by hex digests):
GROUPS = b"/groups/"  # + readable_key(group): the group, its exact name as value
MEMBERS = b"/group-members/"  # + readable_key(group) + "/" + member id: a member's entry
RECONNECT_PAUSE = 0.5  # seconds between attempts to open the members' watch
IDLE_REOPEN = 60.0  # seconds of silence after which it is opened anew (a silent partition)


class EtcdGroupStore(GroupStore):
    """The groups under one URL prefix, as one coordinator's session sees them."""

    poll_interval = 30.0  # every change is pushed by a watch: this read is a safety net

    def __init__(self, session: EtcdSession, prefix: bytes, member_id: str) -> None:
        self._session = session
        self._gateway = session.gateway
        self._prefix = prefix
        self._member = member_id.encode("utf-8", "surrogateescape")
        self._entries: dict[bytes, Hold] = {}  # this member's entry in each group it is in
        self._subscribers = GroupSubscribers(f"conch-etcd-watch-{prefix!r}", self._listen)
        self.forget_parent()
        forget_in_child(self)

    def forget_parent(self) -> None:
        """In a forked child: the parent's watch stream and thread are not ours."""
        self._mutex = threading.Lock()  # guards _entries
        self._subscribers.forget_parent()

    def create(self, group: bytes) -> bool:
        key = self._group_key(group)
        answer = self._gateway.txn(compare=[created(key)], success=[
            {"request_put": {"key": encode(key), "value": encode(group)}}])
        return bool(answer.get("succeeded"))

    def delete(self, group: bytes) -> None:
        key, members = encode(self._group_key(group)), self._members_of(group)
        # One transaction: the group goes only if it exists and no member key is left.
        answer = self._gateway.txn(
            compare=[created({"key": key}, result="GREATER"), created(keys_under(members))],
            success=[{"request_delete_range": {"key": key}}],
            failure=[{"request_range": {"key": key, "count_only": True}},
                     {"request_range": keys_under(members, count_only=True)}])
        if answer.get("succeeded"):
            return
        found, members_found = (int(response.get("response_range", {}).get("count", "0"))
                                for response in answer["responses"])
        if not found:
            raise GroupNotFound(f"group {group!r} does not exist")
        raise GroupNotEmpty(f"group {group!r} still has {members_found} members")

    def names(self) -> list[bytes]:
        answer = self._gateway.call("/v3/kv/range", keys_under(self._prefix + GROUPS))
        return [decode(kv.get("value", "")) for kv in answer.get("kvs", [])]

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        key = self._members_of(group) + self._member
        while True:
            lease = self._session.lease()
            put = {"key": encode(key), "value": encode(data), "lease": str(lease.id)}
            answer = self._session.write_with(
                lease, compare=[created(self._group_key(group), result="GREATER")],
                success=[{"request_put": put}])
            if answer is None:
                continue
            if not answer.get("succeeded"):
                raise GroupNotFound(f"group {group!r} does not exist")
            entry = Hold(lease, key, int(answer["header"]["revision"]))
            with self._mutex:
                previous = self._entries.pop(group, None)
                if previous is not None:
                    previous.lease.entries.discard(previous)
                if self._session.track(entry, on_lost, entry=True):
                    self._entries[group] = entry
                    return
            # The lease was lost meanwhile: put the entry again on the session's new one.

    def leave(self, group: bytes) -> bool:
        with self._mutex:
            entry = self._entries.pop(group, None)
        if entry is not None:
            entry.lease.entries.discard(entry)
            if entry.pid != os.getpid():  # a forked child: the entry is its parent's
                return False
        # Unreachable: a later beat deletes it (or the lease's end does).
        return self._session.delete(self._members_of(group) + self._member) > 0

    def members(self, group: bytes) -> dict[str, bytes] | None:
        prefix = self._members_of(group)
        answer = self._gateway.txn(compare=[], success=[
            {"request_range": {"key": encode(self._group_key(group)), "count_only": True}},
            {"request_range": keys_under(prefix)}])
        found, listed = (response.get("response_range", {})
                         for response in answer["responses"])
        if int(found.get("count", "0")) == 0:
            return None
        return {decode(kv["key"])[len(prefix):].decode("utf-8", "surrogateescape"):
                decode(kv.get("value", "")) for kv in listed.get("kvs", [])}

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        return self._subscribers.subscribe(readable_key(group).encode(), changed)

    def close(self) -> None:
        """The coordinator stops: the watch thread ends once the session cut its watch."""
        self._subscribers.stop()

    def _listen(self, stopped: threading.Event, wake: Wake) -> None:
        """Follow every group's member keys on one watch, opened anew when it ends or idles;
        wake every group when it opens (changes may have been missed)."""
        members = self._prefix + MEMBERS
        while not stopped.is_set():
            try:
                watch = self._session.watch(members)
            except BackendUnavailable as exc:
                log.info("conch: watching etcd keys %r failed, will retry: %s", members, exc)
                stopped.wait(RECONNECT_PAUSE)
                continue
            try:
                wake(None)
                while watch.wait(Deadline(IDLE_REOPEN)) and not watch.ended:
                    wake({key[len(members):].partition(b"/")[0] for key in watch.take_changes()})
            finally:
                watch.close()

    def _group_key(self, group: bytes) -> bytes:
        return self._prefix + GROUPS + readable_key(group).encode()

    def _members_of(self, group: bytes) -> bytes:
        return self._prefix + MEMBERS + readable_key(group).encode() + b"/"
