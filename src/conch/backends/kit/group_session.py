"""Group entries kept alive by one server session (the SQL backends): the entries' locks are
held by a connection of the coordinator's own, opened on first use; a heartbeat checks that
each entry still exists and is still locked by it, and reports those that are not, outside
any mutex (a :class:`conch.Group` re-joins from its own thread)."""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from conch.backends.base import GroupStore, LossCallback
from conch.backends.kit.session import Heartbeat
from conch.errors import BackendUnavailable

C = TypeVar("C")  # the client library's connection
T = TypeVar("T")


class SessionGroups(GroupStore, Generic[C]):
    """A :class:`GroupStore` whose entries live on one session; a backend gives its
    statements (``_prepare``, ``_present``, ``_unlock``, the store's own) and its client's
    ways (``_broken``, ``_end``, ``_describe_error``)."""

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
        self._heartbeat = Heartbeat(f"conch-groups {member_id}", heartbeat, self._beat)
        self._closed = False

    @abc.abstractmethod
    def _broken(self, session: C, exc: Exception) -> bool:
        """True when ``exc`` (raised by ``session``) means the session ended."""

    @abc.abstractmethod
    def _end(self, session: C) -> None:
        """Close ``session`` now (its entries' locks are freed). Never raises."""

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

    def joined_on(self, group: bytes, session: C) -> bool:
        """True when this member's entry in ``group`` is locked by ``session`` (caller in
        :meth:`run`): joining again only updates it."""
        entry = self._entries.get(group)
        return entry is not None and entry[1] is session

    def entered(self, group: bytes, session: C, on_lost: LossCallback | None) -> None:
        """The entry in ``group`` is now locked by ``session`` (``on_lost`` ``None``: it is
        not, it was left). Caller in :meth:`run`."""
        if on_lost is None:
            self._entries.pop(group, None)
            return
        self._entries[group] = (on_lost, session)
        with contextlib.suppress(RuntimeError):  # started already
            self._heartbeat.start()

    def leaving(self, group: bytes, leave: Callable[[C], None]) -> bool:
        """Run ``leave`` on the session that holds the entry in ``group``; ``False`` when
        there is none (never joined, or lost)."""
        def run_leave(session: C) -> bool:
            entry = self._entries.pop(group, None)
            if entry is None or entry[1] is not session:
                return False
            leave(session)
            return True
        with self._mutex:
            if group not in self._entries:
                return False
        return self.run(run_leave)

    def run(self, work: Callable[[C], T]) -> T:
        """``work`` on the session, opened when missing; a session found ended (a server
        restart, an idle timeout) is replaced once. Client errors become
        :class:`BackendUnavailable`."""
        with self._mutex:
            if self._closed:
                raise BackendUnavailable(self.describe("the coordinator was stopped"))
            reused = self._session is not None
            try:
                return self._attempt(work)
            except self.client_errors as exc:
                if not reused or self._session is not None:  # not a stale session's end
                    raise self._unavailable(exc) from None
            try:
                return self._attempt(work)
            except self.client_errors as exc:
                raise self._unavailable(exc) from None

    def close(self) -> None:
        """The coordinator stops: the checks end, then the session (freeing the entries)."""
        with self._mutex:
            self._closed = True
            session, self._session = self._session, None
            self._entries.clear()
        self._heartbeat.stop()
        if session is not None:
            self._end(session)

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
                    if not self._broken(session, exc):
                        return  # no verdict; the next beat asks again
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
