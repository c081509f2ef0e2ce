"""Group entries kept alive by one server session (the SQL backends): the entries' locks are
held by a connection of the coordinator's own, opened on first use; a heartbeat checks that
each entry still exists and is still locked by it, and reports those that are not, outside
any mutex (a :class:`conch.Group` re-joins from its own thread)."""

from __future__ import annotations

import abc
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from conch.backends.base import GroupStore, LossCallback
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.session import Heartbeat
from conch.errors import BackendUnavailable, GroupNotFound

C = TypeVar("C")  # the client library's connection
T = TypeVar("T")


class SessionGroups(GroupStore, Generic[C]):
    """A :class:`GroupStore` whose entries live on one session. A backend gives the
    statements (the methods left abstract, and those of the groups themselves: ``create``,
    ``delete``, ``names``, ``members`` through :meth:`run`) and its client's ways."""

    client_errors: tuple[type[Exception], ...]
    """What the client library raises."""

    def __init__(self, open_session: Callable[[], C], member_id: str, heartbeat: float,
                 describe: Callable[[object], str]) -> None:
        """``open_session`` gives a new session (raises :class:`conch.ConchError`)."""
        self._open = open_session
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
    def _broken(self, session: C, exc: Exception) -> bool:
        """True when ``exc`` (raised by ``session``) means the session ended."""

    @abc.abstractmethod
    def _end(self, session: C) -> None:
        """Close ``session`` now (its entries' locks are freed). Never raises."""

    @abc.abstractmethod
    def _abandon(self, session: C) -> None:
        """In a forked child: drop ``session`` without a word to the server (it is the
        parent's). Never raises."""

    @abc.abstractmethod
    def _prepare(self, session: C) -> None:
        """Make the tables when they are missing (first use, or dropped since)."""

    @abc.abstractmethod
    def _unprepared(self, exc: Exception) -> bool:
        """True when ``exc`` says a table is missing."""

    @abc.abstractmethod
    def _present(self, session: C, groups: list[bytes]) -> set[bytes]:
        """Which of ``groups`` still hold this member's entry, locked by ``session``."""

    @abc.abstractmethod
    def _unlock(self, session: C, group: bytes) -> None:
        """Free ``session``'s lock on this member's entry in ``group``."""

    @abc.abstractmethod
    def _describe_error(self, exc: Exception) -> str:
        """A client error, for users."""

    @abc.abstractmethod
    def _lock(self, session: C, group: bytes) -> bool:
        """Lock this member's entry in ``group`` on ``session``, without waiting; ``False``
        when another session holds it."""

    @abc.abstractmethod
    def _write_entry(self, session: C, group: bytes, data: bytes) -> None:
        """Write (or replace) this member's entry in ``group``: :class:`conch.GroupNotFound`
        when there is no such group."""

    @abc.abstractmethod
    def _delete_entry(self, session: C, group: bytes) -> None:
        """Delete this member's entry in ``group``."""

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        def join(session: C) -> None:
            entry = self._entries.get(group)
            locked = entry is not None and entry[1] is session  # joined before: an update
            if not locked and not self._lock(session, group):
                raise BackendUnavailable(self.describe(
                    f"member {self.member!r} is already in group {group!r} through another "
                    "session: two coordinators share this member id"))
            try:
                self._write_entry(session, group, data)
            except GroupNotFound:
                self._unlock(session, group)
                self._entries.pop(group, None)
                raise
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
            self._delete_entry(session, group)
            self._unlock(session, group)
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
                        raise self._unavailable(exc) from None
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

    def _attempt(self, work: Callable[[C], T]) -> T:
        session = self._session = self._open() if self._session is None else self._session
        try:
            if not self._prepared:
                self._prepare(session)
                self._prepared = True
            try:
                return work(session)
            except self.client_errors as exc:
                if not self._unprepared(exc):
                    raise
            self._prepare(session)  # a table was dropped since: made again
            return work(session)
        except self.client_errors as exc:
            if self._broken(session, exc):
                self._end(session)
                self._session = None
            raise

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(self.describe(self._describe_error(exc)))

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
                    present = self._present(session, list(entries))
                except self.client_errors as exc:
                    if self._unprepared(exc):  # the tables were dropped, the entries too
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
                        self._unlock(entry_session, group)
                del self._entries[group]
                lost.append((on_lost, self.describe(reason)))
        for on_lost, reason in lost:
            on_lost(reason)
