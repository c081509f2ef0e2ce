"""Group faults shared by the SQL backends' tests (test_postgresql_groups.py,
test_mysql_groups.py): each backend's test says how to hurt the server, these say what a
member must see."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import conch
from tests.contract import workers

LOSS_BOUND = 15.0
"""Seconds within which a member hears of a fault and is back in its group (loaded machine)."""


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` is true (errors count as false); fails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except conch.BackendUnavailable:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def is_in(reader: conch.Coordinator, group: str, member_id: str, capabilities: object) -> bool:
    """True while ``reader`` sees ``member_id`` in ``group`` with ``capabilities``."""
    members = reader.group(group).members()
    return member_id in members and members[member_id] == capabilities


def rejoins_after_a_fault(member: conch.Coordinator, reader: conch.Coordinator, group: str,
                          fault: Callable[[], None]) -> tuple[float, float]:
    """``member`` is in ``group``; after ``fault`` it is told (``group.lost``) and conch puts
    it back with its capabilities, as ``reader`` sees. Seconds to each."""
    joined = member.group(group)
    joined.join({"weight": 7})
    assert is_in(reader, group, member.member_id, {"weight": 7})
    fault()
    started = time.monotonic()
    assert joined.lost.wait(LOSS_BOUND), "the member was not told it was dropped"
    told = time.monotonic() - started
    wait_until(lambda: is_in(reader, group, member.member_id, {"weight": 7}), LOSS_BOUND,
               "re-joined")
    return told, time.monotonic() - started


def a_killed_members_entry_is_deleted_by_the_next_read(
        url: str, reader: conch.Coordinator, group: str,
        entries_of: Callable[[str], int]) -> None:
    """A SIGKILLed worker's row stays until a member reads the group, which deletes it;
    ``entries_of(member_id)`` counts the rows the server keeps for a member."""
    worker = workers.spawn(url, "join", group)
    try:
        worker_id = workers.expect(worker, "joined ")
        assert entries_of(worker_id) == 1
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        wait_until(lambda: worker_id not in reader.group(group).members(), 5.0, "gone")
    finally:
        worker.kill()
        worker.communicate()
    assert entries_of(worker_id) == 0, "the dead entry was not deleted"


def a_hostile_name_round_trips(member: conch.Coordinator, reader: conch.Coordinator) -> None:
    """A 256-byte name of path, pattern and control characters is its own group."""
    name = ("/../*%_\n\t'\"\\;--é☃" * 20).encode()[:256]
    member.group(name).join("in")
    assert reader.group(name).members() == {member.member_id: "in"}
    assert reader.group(name[:-1]).members() == {}
    assert name.decode("utf-8", "surrogateescape") in reader.groups()
    member.group(name).leave()
