"""Groups in two SQL tables (postgresql, mysql): an entry counts while the membership session
holds its lock. A backend gives its dialect's statements; docs/kit.md, "SQL groups"."""

from __future__ import annotations

import abc
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from conch.backends.base import GroupStore, LossCallback
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.session import Heartbeat
from conch.errors import BackendUnavailable, GroupNotEmpty, GroupNotFound

C = TypeVar("C")  # the client library's connection
T = TypeVar("T")
Rows = list[tuple[Any, ...]]
GROUPS_TABLE = "conch_groups"
MEMBERS_TABLE = "conch_group_members"


class SQLGroups(GroupStore, Generic[C]):
    """The group statements of one dialect, taking the named parameters ``group``, ``member``
    (bytes), ``data``, ``groups`` (a list) and those of :meth:`_entry` (the entry's lock)."""

    client_errors: tuple[type[Exception], ...]  # what the client library raises
    missing_table: frozenset[object]  # the error codes (:meth:`_code`) of a missing table
    referenced: frozenset[object]  # of a foreign key's refusal (no such group, or members)
    create_group: str  # changes one row when it made the group
    delete_group = f"DELETE FROM {GROUPS_TABLE} WHERE name = %(group)s"
    list_groups = f"SELECT name FROM {GROUPS_TABLE}"
    read_members: str  # (member, data, live) per entry, then (NULL, NULL, TRUE) for the group
    prune_member: str | None  # delete a dead entry (``None``: read_members deletes them)
    lock_entry: str  # one row, 1 when the entry's lock was free and is now this session's
    write_entry: str
    delete_entry: str
    unlock_entry: str
    present_entries: str  # the groups whose entry exists and is locked by this session

    def __init__(self, open_session: Callable[[], C], end: Callable[[C], None],
                 abandon: Callable[[C], None], member_id: str, heartbeat: float,
                 describe: Callable[[object], str]) -> None:
        """``open_session`` gives a new session (raises :class:`conch.ConchError`), ``end``
        closes one now, never raising (its entries' locks are freed), and ``abandon`` drops
        one in a forked child without a word to the server (it is the parent's)."""
        self._open, self._end, self._abandon = open_session, end, abandon
        self.member = member_id.encode("utf-8", "surrogateescape")
        self.describe = describe
        self._mutex = threading.Lock()
        self._session: C | None = None
        self._prepared = False
        self._entries: dict[bytes, tuple[LossCallback, C]] = {}  # by group: on the session
        self._new_heartbeat = functools.partial(Heartbeat, f"conch-groups {member_id}",
                                                heartbeat, self._beat)
        self._heartbeat = self._new_heartbeat()
        self._closed = False
        forget_in_child(self)

    @abc.abstractmethod
    def _run(self, session: C, sql: str, params: dict[str, object]) -> tuple[int, Rows]:
        """Run ``sql``: the rows it changed (or read), and the rows it read."""

    @abc.abstractmethod
    def _entry(self, group: bytes) -> dict[str, object]:
        """The parameters naming this member's entry lock in ``group``."""

    @abc.abstractmethod
    def _code(self, exc: Exception) -> object:
        """The error code of a client error."""

    @abc.abstractmethod
    def _broken(self, session: C, exc: Exception) -> bool:
        """True when ``exc`` (raised by ``session``) means the session ended."""

    @abc.abstractmethod
    def _prepare(self, session: C) -> None:
        """Make the tables when they are missing (first use, or dropped since)."""

    @abc.abstractmethod
    def _describe_error(self, exc: Exception) -> str:
        """A client error, for users."""

    def create(self, group: bytes) -> bool:
        return self.run(lambda session: self._run(
            session, self.create_group, {"group": group})[0] == 1)

    def delete(self, group: bytes) -> None:
        def delete(session: C) -> None:
            live = self._members(session, group)
            if live:
                raise GroupNotEmpty(f"group {group!r} still has {len(live)} members")
            try:
                deleted = self._run(session, self.delete_group, {"group": group})[0]
            except self.client_errors as exc:
                if self._code(exc) not in self.referenced:
                    raise
                raise GroupNotEmpty(f"a member joined group {group!r} meanwhile") from None
            if not deleted:
                raise GroupNotFound(f"group {group!r} does not exist")
        self.run(delete)

    def names(self) -> list[bytes]:
        return self.run(lambda session: [
            bytes(row[0]) for row in self._run(session, self.list_groups, {})[1]])

    def members(self, group: bytes) -> dict[str, bytes] | None:
        return self.run(lambda session: self._members(session, group))

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        def join(session: C) -> None:
            entry = self._entries.get(group)
            if (entry is None or entry[1] is not session) and \
                    self._run(session, self.lock_entry, self._params(group))[1][0][0] != 1:
                raise BackendUnavailable(self.describe(
                    f"member {self.member!r} is already in group {group!r} through another "
                    "session: two coordinators share this member id"))
            try:
                self._run(session, self.write_entry, self._params(group, data=data))
            except self.client_errors as exc:
                if self._code(exc) not in self.referenced:
                    raise
                self._run(session, self.unlock_entry, self._params(group))
                self._entries.pop(group, None)
                raise GroupNotFound(f"group {group!r} does not exist") from None
            self._entries[group] = (on_lost, session)
        self.run(join)
        with contextlib.suppress(RuntimeError):  # started already
            self._heartbeat.start()

    def leave(self, group: bytes) -> bool:
        def leave(session: C) -> bool:
            entry = self._entries.get(group)
            if entry is None or entry[1] is not session:
                self._entries.pop(group, None)
                return False  # lost meanwhile, with its session
            self._run(session, self.delete_entry, self._params(group))
            self._run(session, self.unlock_entry, self._params(group))
            del self._entries[group]  # only now: a failed leave can be tried again
            return True
        with self._mutex:
            if group not in self._entries:
                return False
        return self.run(leave)

    def run(self, work: Callable[[C], T]) -> T:
        """``work`` on the session, opened when missing; a session found ended (a server
        restart, an idle timeout) is replaced once. Client errors become
        :class:`BackendUnavailable`."""
        with self._mutex:
            if self._closed:
                raise BackendUnavailable(self.describe("the coordinator was stopped"))
            reused = self._session is not None
            while True:
                try:
                    return self._attempt(work)
                except self.client_errors as exc:
                    if not reused or self._session is not None:  # not a stale session's end
                        raise BackendUnavailable(self.describe(
                            self._describe_error(exc))) from None
                reused = False

    def close(self) -> None:
        """The coordinator stops: the checks end, then the session (freeing the entries)."""
        with self._mutex:
            self._closed = True
            session, self._session = self._session, None
            self._entries.clear()
        self._heartbeat.stop()
        if session is not None:
            self._end(session)

    def forget_parent(self) -> None:
        """In a forked child: the parent's session and entries stay the parent's."""
        self._mutex = threading.Lock()  # another thread of the parent may have held it
        session, self._session, self._entries = self._session, None, {}
        if session is not None:
            self._abandon(session)
        self._heartbeat = self._new_heartbeat()

    def _members(self, session: C, group: bytes) -> dict[str, bytes] | None:
        rows = self._run(session, self.read_members, {"group": group})[1]
        for member, _, live in rows:
            if member is not None and not live and self.prune_member is not None:
                self._run(session, self.prune_member, {"group": group, "member": member})
        if all(member is not None for member, _, _ in rows):
            return None  # no group row
        return {bytes(member).decode("utf-8", "surrogateescape"): bytes(data)
                for member, data, live in rows if member is not None and live}

    def _params(self, group: bytes, **more: object) -> dict[str, object]:
        return {"group": group, "member": self.member, **self._entry(group), **more}

    def _attempt(self, work: Callable[[C], T]) -> T:
        session = self._session = self._open() if self._session is None else self._session
        try:
            if not self._prepared:
                self._prepare(session)
                self._prepared = True
            try:
                return work(session)
            except self.client_errors as exc:
                if self._code(exc) not in self.missing_table:
                    raise
            self._prepare(session)  # a table was dropped since: made again
            return work(session)
        except self.client_errors as exc:
            if self._broken(session, exc):
                self._end(session)
                self._session = None
            raise

    def _beat(self) -> None:
        """Report each entry whose session ended, or whose row or lock is gone (deleted
        behind this member's back: its lock is freed)."""
        lost: list[tuple[LossCallback, str]] = []
        with self._mutex:
            session, entries = self._session, dict(self._entries)
            ended = "its membership session ended"
            present: set[bytes] = set()
            if session is not None and entries:
                try:
                    present = {bytes(row[0]) for row in self._run(session, self.present_entries, {
                        "member": self.member, "groups": list(entries)})[1]}
                except self.client_errors as exc:
                    if self._code(exc) in self.missing_table:  # dropped: the entries too
                        self._prepared = False
                    elif not self._broken(session, exc):
                        return  # no verdict; the next beat asks again
                    else:
                        ended = f"its membership session failed: {self._describe_error(exc)}"
                        self._end(session)
                        session = self._session = None
            for group, (on_lost, entry_session) in entries.items():
                if group in present:
                    continue
                reason = ended
                if entry_session is session:
                    reason = "its entry was deleted on the server"
                    with contextlib.suppress(*self.client_errors):
                        self._run(entry_session, self.unlock_entry, self._params(group))
                del self._entries[group]
                lost.append((on_lost, self.describe(reason)))
        for on_lost, reason in lost:
            on_lost(reason)
