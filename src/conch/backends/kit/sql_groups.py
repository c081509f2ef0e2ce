"""Groups in two SQL tables (postgresql, mysql): a row per group and one per member entry, an
entry counting while the coordinator's membership session holds the entry's lock. A backend
gives its dialect's statements and how its client runs one; docs/kit.md, "SQL groups"."""

from __future__ import annotations

import abc
from typing import Any

from conch.backends.kit.group_session import C, SessionGroups
from conch.errors import GroupNotEmpty, GroupNotFound

Rows = list[tuple[Any, ...]]


class SQLGroups(SessionGroups[C]):
    """The group statements of one dialect, each taking the named parameters ``group``,
    ``member`` (this member's id, as bytes), ``data``, ``groups`` (a list) and those of
    :meth:`_entry` (the entry's lock)."""

    create_group: str  # changes one row when it made the group
    delete_group: str  # changes one row when it deleted the group
    list_groups: str  # the groups' names
    read_members: str  # (member, data, live) per entry, then (NULL, NULL, TRUE) for the group
    prune_member: str | None  # delete a dead entry (``None``: read_members deletes them)
    lock_entry: str  # one row, 1 when the entry's lock was free and is now this session's
    write_entry: str
    delete_entry: str
    unlock_entry: str
    present_entries: str  # the groups whose entry exists and is locked by this session

    @abc.abstractmethod
    def _run(self, session: C, sql: str, params: dict[str, object]) -> tuple[int, Rows]:
        """Run ``sql``: the rows it changed (or read), and the rows it read."""

    @abc.abstractmethod
    def _entry(self, group: bytes) -> dict[str, object]:
        """The parameters naming this member's entry lock in ``group``."""

    @abc.abstractmethod
    def _referenced(self, exc: Exception) -> bool:
        """True when ``exc`` is a foreign key's refusal (no such group, or it has members)."""

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
                if not self._referenced(exc):
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

    def _present(self, session: C, groups: list[bytes]) -> set[bytes]:
        return {bytes(row[0]) for row in self._run(
            session, self.present_entries, {"member": self.member, "groups": groups})[1]}

    def _lock(self, session: C, group: bytes) -> bool:
        return bool(self._run(session, self.lock_entry, self._params(group))[1][0][0] == 1)

    def _write_entry(self, session: C, group: bytes, data: bytes) -> None:
        try:
            self._run(session, self.write_entry, self._params(group, data=data))
        except self.client_errors as exc:
            if not self._referenced(exc):
                raise
            raise GroupNotFound(f"group {group!r} does not exist") from None

    def _delete_entry(self, session: C, group: bytes) -> None:
        self._run(session, self.delete_entry, self._params(group))

    def _unlock(self, session: C, group: bytes) -> None:
        self._run(session, self.unlock_entry, self._params(group))
