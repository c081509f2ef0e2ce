"""Looking at locks from outside: who holds one, since when, who waits; breaking a hold.

Each hold leaves a :class:`HolderStamp` with the hold itself, in the write that takes the
lock; a backend adds what its server knows (docs/introspection.md). The coordinator's
``describe``, ``holders`` and ``break_lock`` return :class:`LockInfo` values."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterable

from conch.errors import BreakRefused, HolderChanged

__all__ = ["BreakRefused", "HolderChanged", "HolderInfo", "HolderStamp", "LockInfo", "Stamp"]

HOST = socket.gethostname()
"""This host's name, as stamps record it."""

_DECODER = json.JSONDecoder()


@dataclasses.dataclass(frozen=True)
class HolderInfo:
    """Who holds a lock, as far as the backend knows (``None``: it cannot tell).

    ``acquired_at`` is a Unix time (the holder's clock); ``ttl_left`` the seconds
    before a TTL backend frees the hold unless it is renewed; ``session`` the
    server's id of the holding session (PostgreSQL backend pid, MySQL connection
    id, ZooKeeper session id, etcd lease id).
    """

    member_id: str | None = None
    host: str | None = None
    pid: int | None = None
    acquired_at: float | None = None
    token: int | None = None
    ttl_left: float | None = None
    session: str | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """One lock name's state: its holder (``None``: free) and how many wait (``None``:
    the backend cannot tell)."""

    key: bytes
    holder: HolderInfo | None
    waiters: int | None = None

    @property
    def name(self) -> str:
        """The lock name as text (bytes that are not UTF-8 shown as ``\\xNN``)."""
        return self.key.decode("utf-8", "backslashreplace")

    @property
    def held(self) -> bool:
        """True while someone holds the lock."""
        return self.holder is not None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: ``name``, ``held``, ``holder`` (or ``null``), ``waiters``."""
        return {
            "name": self.name,
            "held": self.held,
            "holder": None if self.holder is None else self.holder.to_json(),
            "waiters": self.waiters,
        }


class HolderStamp:
    """The stamp of one lock handle's holds, built once so that each acquire only adds
    its pid and time.

    ``head`` is the part that never changes (name, member id, host), a JSON object
    of its own: a backend that stores the pid and time in binary next to it (the
    file backend, whose acquire takes microseconds) writes only ``head``.
    """

    __slots__ = ("_open", "head")

    def __init__(self, key: bytes, member_id: str) -> None:
        self.head = json.dumps(
            {"name": key.decode("utf-8", "surrogateescape"), "member": member_id, "host": HOST},
            separators=(",", ":"),
        ).encode()
        self._open = self.head[:-1] + b',"pid":'

    def stamp(self) -> bytes:
        """The stamp of a hold starting now (ASCII JSON, no spaces or newlines)."""
        return self._open + b'%d,"since":%.6f}' % (os.getpid(), time.time())


@dataclasses.dataclass(frozen=True)
class Stamp:
    """A stamp read back: the lock's key and what it says about the holder."""

    key: bytes
    member_id: str | None
    host: str | None
    pid: int | None
    acquired_at: float | None

    def holder(self, **known: object) -> HolderInfo:
        """The :class:`HolderInfo` of this stamp plus the fields the server knows."""
        fields: dict[str, object] = {
            "member_id": self.member_id, "host": self.host, "pid": self.pid,
            "acquired_at": self.acquired_at,
        }
        fields.update(known)
        return HolderInfo(**fields)  # type: ignore[arg-type]


def read_stamp(data: bytes | str | None) -> Stamp | None:
    """Parse a stamp at the start of ``data`` (what follows it is ignored); ``None`` when
    ``data`` holds none (a value written by something else, or damaged)."""
    if not data:
        return None
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    try:
        found, _ = _DECODER.raw_decode(text)
        name = found["name"]
        key = name.encode("utf-8", "surrogateescape")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
        return None
    return Stamp(
        key=key,
        member_id=_text(found.get("member")),
        host=_text(found.get("host")),
        pid=_integer(found.get("pid")),
        acquired_at=_number(found.get("since")),
    )


def has_hold_to_break(lock: LockInfo, token: int | None) -> bool:
    """Whether ``lock`` (just described) has a hold that ``break_lock(token=token)`` may end.

    Raises :class:`HolderChanged` when ``token`` is given and is not the current hold's.
    """
    if lock.holder is None:
        if token is not None:
            raise HolderChanged(f"lock {lock.name!r} is no longer held")
        return False
    if token is not None and lock.holder.token != token:
        raise HolderChanged(f"lock {lock.name!r} is now held by token {lock.holder.token}, "
                            f"not {token}")
    return True


def matching(locks: Iterable[LockInfo], prefix: bytes) -> list[LockInfo]:
    """The held ``locks`` whose name starts with ``prefix``, sorted by name."""
    return sorted((lock for lock in locks if lock.held and lock.key.startswith(prefix)),
                  key=lambda lock: lock.key)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None
