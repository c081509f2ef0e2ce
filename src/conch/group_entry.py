"""What a group member leaves on the server: its capabilities (any JSON value) with its
host, pid and join time, checked and encoded here once for every backend."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from conch.errors import InvalidGroup
from conch.introspection import HOST
from conch.lock import name_bytes

log = logging.getLogger("conch")

GroupName = str | bytes
MAX_GROUP_NAME_BYTES = 256
MAX_CAPABILITIES_BYTES = 64 * 1024


def group_key(name: GroupName) -> bytes:
    """The bytes that identify group ``name`` (``str`` as UTF-8)."""
    key = name_bytes(name, "group", InvalidGroup, MAX_GROUP_NAME_BYTES)
    if b"\0" in key:
        raise InvalidGroup(f"a group name must not contain NUL bytes: {name!r}")
    return key


@dataclasses.dataclass(frozen=True)
class MemberInfo:
    """One member of a group: what it joined with, where it runs (``None``: not recorded,
    the entry was written by something else than conch)."""

    member_id: str
    capabilities: Any
    host: str | None = None
    pid: int | None = None
    joined_at: float | None = None
    updated_at: float | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


def encode_entry(capabilities: Any, joined_at: float, updated_at: float) -> bytes:
    """The entry a member leaves (when it first joined, when it last joined): raise
    :class:`conch.InvalidGroup` for capabilities that are not JSON or are larger than
    :data:`MAX_CAPABILITIES_BYTES`."""
    try:
        encoded = json.dumps(capabilities, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidGroup(f"capabilities must be a JSON value: {exc}") from None
    if len(encoded) > MAX_CAPABILITIES_BYTES:
        raise InvalidGroup(f"capabilities must be at most {MAX_CAPABILITIES_BYTES} bytes as "
                           f"JSON, got {len(encoded)}")
    entry = {"capabilities": capabilities, "host": HOST, "pid": os.getpid(),
             "joined_at": joined_at, "updated_at": updated_at}
    return json.dumps(entry, separators=(",", ":")).encode()


def decode_entry(member_id: str, data: bytes) -> MemberInfo:
    """The member behind an entry; one that is not conch's is logged, with its raw text
    as capabilities."""
    try:
        entry = json.loads(data)
        return MemberInfo(member_id, entry["capabilities"], entry.get("host"),
                          entry.get("pid"), entry.get("joined_at"), entry.get("updated_at"))
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("conch: member %r left an entry that is not conch's", member_id)
        return MemberInfo(member_id, data.decode("utf-8", "replace"))
