"""tooz's group membership calls on :class:`conch.Group`: ids and members are ``bytes`` in
what they return, errors are tooz's, and every call returns a result to ``get()``.

tooz stores capabilities with msgpack; conch stores JSON, so ``bytes`` (anywhere in them,
tooz services pass bytes or dicts) are kept as ``{"$tooz_bytes": base64}`` and given back as
``bytes``. README, "Switching from tooz", lists the differences."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import conch
from conch.compat.tooz.errors import (
    GroupAlreadyExist,
    GroupNotCreated,
    GroupNotEmpty,
    MemberAlreadyExist,
    MemberNotJoined,
    SerializationError,
)
from conch.compat.tooz.results import CoordinatorResult, run_now
from conch.group_entry import GroupName, MemberInfo

BYTES_TAG = "$tooz_bytes"
"""The key of the JSON object that stands for a ``bytes`` value in stored capabilities."""


def to_json(capabilities: Any) -> Any:
    """``capabilities`` with every ``bytes`` as a tagged object (tuples become lists, as
    msgpack gives them back); :class:`SerializationError` for what JSON cannot hold."""
    if isinstance(capabilities, (bytes, bytearray)):
        return {BYTES_TAG: base64.b64encode(capabilities).decode("ascii")}
    if isinstance(capabilities, (list, tuple)):
        return [to_json(item) for item in capabilities]
    if isinstance(capabilities, dict):
        if not all(isinstance(key, str) for key in capabilities):
            raise SerializationError("capabilities' dict keys must be str to be stored by conch")
        return {key: to_json(value) for key, value in capabilities.items()}
    return capabilities


def from_json(stored: Any) -> Any:
    """What :func:`to_json` was given (tagged objects back to ``bytes``)."""
    if isinstance(stored, list):
        return [from_json(item) for item in stored]
    if isinstance(stored, dict):
        if set(stored) == {BYTES_TAG} and isinstance(stored[BYTES_TAG], str):
            return base64.b64decode(stored[BYTES_TAG])
        return {key: from_json(value) for key, value in stored.items()}
    return stored


def member_bytes(member_id: str) -> bytes:
    """A conch member id as tooz gives member ids: ``bytes``."""
    return member_id.encode("utf-8")


def group_bytes(name: GroupName) -> bytes:
    """A group name as tooz's ``get_groups()`` gives it: ``bytes``."""
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


class GroupCalls:
    """tooz's group calls, for :class:`~conch.compat.tooz.coordination.CoordinationDriver`
    (which provides ``conch_coordinator``, started)."""

    conch_coordinator: conch.Coordinator

    def create_group(self, group_id: GroupName) -> CoordinatorResult[None]:
        """Create the group (``GroupAlreadyExist`` when it exists)."""
        def create() -> None:
            if not self._group(group_id).create():
                raise GroupAlreadyExist(group_id)
        return run_now(create)

    def delete_group(self, group_id: GroupName) -> CoordinatorResult[None]:
        """Delete the group: ``GroupNotCreated``, or ``GroupNotEmpty`` while it has members."""
        def delete() -> None:
            try:
                self._group(group_id).delete()
            except conch.GroupNotFound:
                raise GroupNotCreated(group_id) from None
            except conch.GroupNotEmpty:
                raise GroupNotEmpty(group_id) from None
        return run_now(delete)

    def get_groups(self) -> CoordinatorResult[list[bytes]]:
        """The names of every group, as ``bytes``."""
        return run_now(lambda: [group_bytes(name) for name in self.conch_coordinator.groups()])

    def join_group(self, group_id: GroupName,
                   capabilities: Any = None) -> CoordinatorResult[None]:
        """Join an existing group (``GroupNotCreated`` otherwise; ``MemberAlreadyExist`` when
        this coordinator is in it) with ``capabilities``."""
        def join() -> None:
            group = self._group(group_id)
            if group.joined:
                raise MemberAlreadyExist(group_id, self.conch_coordinator.member_id)
            if not group.exists():
                raise GroupNotCreated(group_id)
            self._enter(group, capabilities)
        return run_now(join)

    def join_group_create(self, group_id: GroupName, capabilities: Any = None) -> None:
        """Join the group, creating it when it does not exist (``MemberAlreadyExist`` when
        this coordinator is in it)."""
        def join() -> None:
            group = self._group(group_id)
            if group.joined:
                raise MemberAlreadyExist(group_id, self.conch_coordinator.member_id)
            self._enter(group, capabilities)  # conch's join creates the group
        run_now(join).get()

    def leave_group(self, group_id: GroupName) -> CoordinatorResult[None]:
        """Leave the group (``MemberNotJoined``, or ``GroupNotCreated``, when not in it)."""
        def leave() -> None:
            self._joined(group_id).leave()
        return run_now(leave)

    def update_capabilities(self, group_id: GroupName,
                            capabilities: Any) -> CoordinatorResult[None]:
        """Replace this member's capabilities in the group (it must have joined)."""
        return run_now(lambda: self._enter(self._joined(group_id), capabilities))

    def get_members(self, group_id: GroupName) -> CoordinatorResult[set[bytes]]:
        """The live members' ids, as ``bytes`` (``GroupNotCreated``: no such group)."""
        return run_now(lambda: set(self._members(group_id)))

    def get_members_with_capabilities(
            self, group_id: GroupName) -> CoordinatorResult[dict[bytes, Any]]:
        """Each live member's capabilities by id, in one read."""
        return run_now(lambda: {member: from_json(info.capabilities)
                                for member, info in self._members(group_id).items()})

    def get_member_capabilities(self, group_id: GroupName,
                                member_id: str | bytes) -> CoordinatorResult[Any]:
        """One member's capabilities (``MemberNotJoined`` when it is not in the group)."""
        return run_now(lambda: from_json(self._member(group_id, member_id).capabilities))

    def get_member_info(self, group_id: GroupName,
                        member_id: str | bytes) -> CoordinatorResult[dict[str, Any]]:
        """One member's ``capabilities``, ``created_at`` and ``updated_at`` (as tooz's
        zookeeper driver gives them: local naive datetimes), plus its ``host`` and ``pid``."""
        def info() -> dict[str, Any]:
            member = self._member(group_id, member_id)
            return {"capabilities": from_json(member.capabilities),
                    "created_at": _local_time(member.joined_at),
                    "updated_at": _local_time(member.updated_at or member.joined_at),
                    "host": member.host, "pid": member.pid}
        return run_now(info)

    def _group(self, group_id: GroupName) -> conch.Group:
        return self.conch_coordinator.group(group_id)

    def _enter(self, group: conch.Group, capabilities: Any) -> None:
        try:
            group.join(to_json(capabilities))
        except conch.InvalidGroup as exc:  # the group's name was checked before: capabilities
            raise SerializationError(str(exc)) from None

    def _joined(self, group_id: GroupName) -> conch.Group:
        """The group, which this coordinator has joined (else tooz's error)."""
        group = self._group(group_id)
        if not group.joined:
            if not group.exists():
                raise GroupNotCreated(group_id)
            raise MemberNotJoined(group_id, self.conch_coordinator.member_id)
        return group

    def _members(self, group_id: GroupName) -> dict[bytes, MemberInfo]:
        group = self._group(group_id)
        members = group.member_info()
        if not members and not group.exists():  # an empty answer may be a missing group
            raise GroupNotCreated(group_id)
        return {member_bytes(member): info for member, info in members.items()}

    def _member(self, group_id: GroupName, member_id: str | bytes) -> MemberInfo:
        member = self._members(group_id).get(
            member_id if isinstance(member_id, bytes) else member_bytes(member_id))
        if member is None:
            raise MemberNotJoined(group_id, member_id)
        return member


def _local_time(stamp: float | None) -> datetime.datetime | None:
    return None if stamp is None else datetime.datetime.fromtimestamp(stamp)
