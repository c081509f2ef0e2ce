"""Scenarios of tooz's group, watcher and partitioner API, written once and run against the
real tooz and against ``conch.compat.tooz``: each returns a transcript (what every call gave
or raised) that the tests compare with the one tooz 9.1 gives (the constants below)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

Transcript = list[tuple[str, object]]


Coordinator = Any
"""A started tooz coordinator: the real tooz's or conch's facade's."""


class Members:
    """Two started coordinators of one service, ``a`` and ``b``, on one backend. Their ids
    are fixed (placements depend on them); the groups are new for each run."""

    ids: ClassVar[dict[bytes, str]] = {b"agent-a": "a", b"agent-b": "b"}

    def __init__(self, make: Callable[[bytes], Coordinator]) -> None:
        self.a, self.b = (make(member) for member in self.ids)
        suffix = uuid.uuid4().hex.encode()
        self.group = b"group-" + suffix
        self.missing = b"missing-" + suffix

    def label(self, value: object) -> object:
        """``value`` with member ids as "a" / "b", sets as sorted lists."""
        if isinstance(value, bytes):
            return self.ids.get(value, value)
        if isinstance(value, (set, frozenset)):
            return sorted(str(self.label(item)) for item in value)
        if isinstance(value, dict):
            return {self.label(key): item for key, item in value.items()}
        return value


def outcome(call: Callable[[], Any]) -> object:
    """What ``call()`` returned, or the name of the exception class it raised."""
    try:
        return call()
    except Exception as exc:  # the transcript records any failure
        return type(exc).__name__


def membership(members: Members) -> Transcript:
    """Create, join, read, update, leave and delete a group, with each tooz error."""
    a, b, group, missing = members.a, members.b, members.group, members.missing
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("create", lambda: a.create_group(group).get()),
        ("create again", lambda: a.create_group(group).get()),
        ("listed", lambda: group in a.get_groups().get()),
        ("no members yet", lambda: a.get_members(group).get()),
        ("a joins", lambda: a.join_group(group, b"caps-a").get()),
        ("a joins again", lambda: a.join_group(group).get()),
        ("b joins a missing group", lambda: b.join_group(missing).get()),
        ("b joins", lambda: b.join_group(group, {"weight": 2, "blob": b"\x00\xff"}).get()),
        ("members", lambda: a.get_members(group).get()),
        ("a's capabilities", lambda: a.get_member_capabilities(group, b"agent-a").get()),
        ("b's capabilities", lambda: a.get_member_capabilities(group, b"agent-b").get()),
        ("nobody's capabilities", lambda: a.get_member_capabilities(group, b"zz").get()),
        ("b updates", lambda: b.update_capabilities(group, {"weight": 3}).get()),
        ("all capabilities", lambda: a.get_members_with_capabilities(group).get()),
        ("delete while joined", lambda: a.delete_group(group).get()),
        ("b leaves", lambda: b.leave_group(group).get()),
        ("b leaves again", lambda: b.leave_group(group).get()),
        ("b updates after leaving", lambda: b.update_capabilities(group, {}).get()),
        ("leave a missing group", lambda: a.leave_group(missing).get()),
        ("members of a missing group", lambda: a.get_members(missing).get()),
        ("capabilities in a missing group",
         lambda: a.get_member_capabilities(missing, b"agent-a").get()),
        ("update in a missing group", lambda: a.update_capabilities(missing, {}).get()),
        ("members after b left", lambda: a.get_members(group).get()),
        ("a leaves", lambda: a.leave_group(group).get()),
        ("delete", lambda: a.delete_group(group).get()),
        ("delete again", lambda: a.delete_group(group).get()),
        ("members once deleted", lambda: a.get_members(group).get()),
        ("join_group_create", lambda: b.join_group_create(group, {"weight": 1})),
        ("join_group_create again", lambda: b.join_group_create(group)),
        ("members after join_group_create", lambda: a.get_members(group).get()),
    ]
    return [(label, members.label(outcome(call))) for label, call in steps]


MEMBERSHIP: Transcript = [
    ("create", None),
    ("create again", "GroupAlreadyExist"),
    ("listed", True),
    ("no members yet", []),
    ("a joins", None),
    ("a joins again", "MemberAlreadyExist"),
    ("b joins a missing group", "GroupNotCreated"),
    ("b joins", None),
    ("members", ["a", "b"]),
    ("a's capabilities", b"caps-a"),
    ("b's capabilities", {"weight": 2, "blob": b"\x00\xff"}),
    ("nobody's capabilities", "MemberNotJoined"),
    ("b updates", None),
    ("all capabilities", {"a": b"caps-a", "b": {"weight": 3}}),
    ("delete while joined", "GroupNotEmpty"),
    ("b leaves", None),
    ("b leaves again", "MemberNotJoined"),
    ("b updates after leaving", "MemberNotJoined"),
    ("leave a missing group", "GroupNotCreated"),
    ("members of a missing group", "GroupNotCreated"),
    ("capabilities in a missing group", "GroupNotCreated"),
    ("update in a missing group", "GroupNotCreated"),
    ("members after b left", ["a"]),
    ("a leaves", None),
    ("delete", None),
    ("delete again", "GroupNotCreated"),
    ("members once deleted", "GroupNotCreated"),
    ("join_group_create", None),
    ("join_group_create again", "MemberAlreadyExist"),
    ("members after join_group_create", ["b"]),
]
"""What tooz 9.1 gives on memcached, and conch on every backend; tooz's other drivers
differ from it as :data:`TOOZ_DRIVERS_DIFFER` says (checked by the tests)."""

TOOZ_DRIVERS_DIFFER: dict[str, dict[str, object]] = {
    # The file driver has no update_capabilities.
    "file": {"b updates": "NotImplemented", "b updates after leaving": "NotImplemented",
             "update in a missing group": "NotImplemented",
             "all capabilities": {"a": b"caps-a", "b": {"weight": 2, "blob": b"\x00\xff"}}},
    # Joining again writes the new capabilities (None) before raising MemberAlreadyExist.
    "redis": {"a's capabilities": None, "all capabilities": {"a": None, "b": {"weight": 3}}},
    # A missing group's member node is missing too: tooz reports the member.
    "kazoo": {"leave a missing group": "MemberNotJoined",
              "capabilities in a missing group": "MemberNotJoined",
              "update in a missing group": "MemberNotJoined"},
}


def run_watchers_until(coordinator: Coordinator, count: int, within: float = 10.0) -> list[Any]:
    """Call ``run_watchers()`` until its callbacks returned ``count`` results in all (tooz
    reads the members in the call; conch's events arrive from its thread)."""
    results: list[Any] = []
    deadline = time.monotonic() + within
    while len(results) < count and time.monotonic() < deadline:
        results.extend(coordinator.run_watchers())
        if len(results) < count:
            time.sleep(0.02)
    return results


def watching(members: Members) -> Transcript:
    """Watch a group's joins and leaves through ``run_watchers()``, then stop watching."""
    a, b, group = members.a, members.b, members.group
    seen: list[tuple[str, object, object]] = []

    def on_join(event: Any) -> str:
        seen.append(("joined", event.group_id, members.label(event.member_id)))
        return "join callback"

    def on_leave(event: Any) -> str:
        seen.append(("left", event.group_id, members.label(event.member_id)))
        return "leave callback"

    def counted(event: Any) -> str:
        return "other join callback"

    transcript: Transcript = [
        ("watch a missing group", outcome(lambda: a.watch_join_group(members.missing, on_join))),
    ]
    a.join_group_create(group)
    a.watch_join_group(group, on_join)
    a.watch_join_group(group, counted)
    a.watch_leave_group(group, on_leave)
    transcript.append(("nothing happened", a.run_watchers()))
    b.join_group(group).get()
    transcript.append(("b joined", run_watchers_until(a, 2)))
    b.leave_group(group).get()
    transcript.append(("b left", run_watchers_until(a, 1)))
    a.unwatch_join_group(group, on_join)
    transcript.append(("unwatch again", outcome(lambda: a.unwatch_join_group(group, on_join))))
    transcript.append(("unwatch a missing group",
                       outcome(lambda: a.unwatch_leave_group(members.missing, on_leave))))
    b.join_group(group).get()
    transcript.append(("b joined, one join callback left", run_watchers_until(a, 1)))
    b.leave_group(group).get()
    transcript.append(("b left again", run_watchers_until(a, 1)))
    transcript.append(("events", seen))
    return transcript


def watching_expected(group: bytes) -> Transcript:
    """What tooz 9.1 gives for :func:`watching` on ``group``."""
    return [
        ("watch a missing group", "GroupNotCreated"),
        ("nothing happened", []),
        ("b joined", ["join callback", "other join callback"]),
        ("b left", ["leave callback"]),
        ("unwatch again", "WatchCallbackNotFound"),
        ("unwatch a missing group", "WatchCallbackNotFound"),
        ("b joined, one join callback left", ["other join callback"]),
        ("b left again", ["leave callback"]),
        ("events", [("joined", group, "b"), ("left", group, "b"), ("left", group, "b")]),
    ]


class Hashed:
    """An object placed by its ``__tooz_hash__``, as Ceilometer's resources are."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __tooz_hash__(self) -> bytes:
        return self.key


OBJECTS = [f"resource-{index}" for index in range(150)] + [Hashed(b"h-%d" % n) for n in range(50)]


def partitioning(members: Members) -> Transcript:
    """Two members of weights 1 and 3 partition objects; each agrees on every placement."""
    a, b, group = members.a, members.b, members.group
    part_a = a.join_partitioned_group(group, weight=1, partitions=16)
    part_b = b.join_partitioned_group(group, weight=3, partitions=16)
    deadline = time.monotonic() + 10
    while len(part_a.ring.nodes) < 2 and time.monotonic() < deadline:
        a.run_watchers()
        time.sleep(0.02)
    placements = [sorted(str(members.label(m)) for m in part_a.members_for_object(obj))
                  for obj in OBJECTS]
    transcript: Transcript = [
        ("ring", members.label(dict(part_a.ring.nodes))),
        ("placements agree", placements == [
            sorted(str(members.label(m)) for m in part_b.members_for_object(obj))
            for obj in OBJECTS]),
        ("a's share", sum(part_a.belongs_to_self(obj) for obj in OBJECTS)),
        ("b's share", sum(part_b.belongs_to_self(obj) for obj in OBJECTS)),
        ("two replicas", all(len(part_a.members_for_object(obj, replicas=2)) == 2
                             for obj in OBJECTS)),
        ("placements", placements),
    ]
    a.leave_partitioned_group(part_a)
    deadline = time.monotonic() + 10
    while len(part_b.ring.nodes) > 1 and time.monotonic() < deadline:
        b.run_watchers()
        time.sleep(0.02)
    transcript.append(("after a left", members.label(dict(part_b.ring.nodes))))
    transcript.append(("b owns all", all(part_b.belongs_to_self(obj) for obj in OBJECTS)))
    b.leave_partitioned_group(part_b)
    return transcript


def started(get_coordinator: Callable[[str, bytes], Coordinator], url: str,
            ) -> Iterator[Members]:
    """Two started members on ``url``; both stopped afterwards."""
    made: list[Coordinator] = []

    def make(member: bytes) -> Coordinator:
        coordinator = get_coordinator(url, member)
        coordinator.start(start_heart=True)
        made.append(coordinator)
        return coordinator

    try:
        yield Members(make)
    finally:
        for coordinator in made:
            if coordinator.is_started:
                coordinator.stop()
