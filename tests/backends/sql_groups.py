"""Group faults every SQL backend's tests run (test_postgresql_groups.py,
test_mysql_groups.py): a backend's test module says how to hurt its server (a ``faults``
fixture, :class:`ServerFaults`) and subclasses :class:`GroupFaults`, which says what a member
must see."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import multiprocessing
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

import conch
from tests.contract import workers

LOSS_BOUND = 15.0
"""Seconds within which a member hears of a fault and is back in its group (loaded machine)."""


@dataclasses.dataclass
class ServerFaults(abc.ABC):
    """One backend's shared test server (tests/servers), and what a test can do to it behind
    its members' backs; each fault is given the member it is meant to hurt."""

    server: Any
    member_query: ClassVar[str]
    """The URL query of a coordinator that checks its entries about every second."""
    idle_limit: ClassVar[float]
    """Seconds after which the server ends that coordinator's silent membership session."""

    @property
    def url(self) -> str:
        return str(self.server.url)

    @property
    def member_url(self) -> str:
        return str(self.server.url_with(query=self.member_query))

    def restart(self, member_id: str) -> None:
        """Stop and start the server."""
        self.server.restart()

    @abc.abstractmethod
    def end_session(self, member_id: str) -> None:
        """End the server session that keeps ``member_id``'s entries."""

    @abc.abstractmethod
    def delete_entries(self, member_id: str) -> None:
        """Delete ``member_id``'s entry rows."""

    @abc.abstractmethod
    def drop_tables(self, member_id: str) -> None:
        """Drop the group tables."""

    @abc.abstractmethod
    def entries(self, member_id: str) -> int:
        """How many entry rows the server keeps for ``member_id``."""


@contextlib.contextmanager
def joined_worker(url: str, group: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A process in ``group`` (tests/contract/workers.py ``join``) and its member id."""
    worker = workers.spawn(url, "join", group)
    try:
        yield worker, workers.expect(worker, "joined ")
    finally:
        worker.kill()
        worker.communicate()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` is true (BackendUnavailable counts as false)."""
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


class GroupFaults:
    """The tests; a ``Test<Backend>Groups`` subclass names its ``backend`` (whose
    ``<backend>_server`` and ``<backend>_url`` fixtures exist) and ``faults_of`` its server."""

    backend: str
    faults_of: type[ServerFaults]

    @pytest.fixture
    def faults(self, request: pytest.FixtureRequest) -> ServerFaults:
        """The backend's shared server (its URL fixture restarts it if a test stopped it)."""
        request.getfixturevalue(f"{self.backend}_url")
        return self.faults_of(request.getfixturevalue(f"{self.backend}_server"))

    @pytest.fixture
    def member(self, faults: ServerFaults) -> Iterator[conch.Coordinator]:
        """A member that checks its entries about every second."""
        with conch.connect(faults.member_url) as coordinator:
            yield coordinator

    @pytest.fixture
    def reader(self, faults: ServerFaults) -> Iterator[conch.Coordinator]:
        """Another coordinator, reading the groups."""
        with conch.connect(faults.url) as coordinator:
            yield coordinator

    @pytest.fixture
    def group_name(self) -> str:
        return f"group-{uuid.uuid4().hex}"

    @pytest.mark.parametrize("fault", ["restart", "end_session", "delete_entries",
                                       "drop_tables"])
    def test_a_member_dropped_behind_its_back_is_told_and_put_back(
        self, faults: ServerFaults, member: conch.Coordinator, reader: conch.Coordinator,
        group_name: str, fault: str,
    ) -> None:
        joined = member.group(group_name)
        joined.join({"weight": 7})
        assert is_in(reader, group_name, member.member_id, {"weight": 7})
        getattr(faults, fault)(member.member_id)
        started = time.monotonic()
        assert joined.lost.wait(LOSS_BOUND), "the member was not told it was dropped"
        told = time.monotonic() - started
        wait_until(lambda: is_in(reader, group_name, member.member_id, {"weight": 7}),
                   LOSS_BOUND, "re-joined")
        print(f"{fault}: told {told:.2f} s, back {time.monotonic() - started:.2f} s after")
        assert faults.entries(member.member_id) == 1
        assert group_name in reader.groups()

    def test_a_killed_members_entry_is_deleted_by_the_next_read(
        self, faults: ServerFaults, reader: conch.Coordinator, group_name: str,
    ) -> None:
        with joined_worker(faults.url, group_name) as (worker, worker_id):
            assert faults.entries(worker_id) == 1
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            wait_until(lambda: worker_id not in reader.group(group_name).members(), 5.0,
                       "the killed member gone")
        assert faults.entries(worker_id) == 0, "the dead entry was not deleted"

    def test_a_frozen_member_leaves_and_comes_back_when_it_thaws(
        self, faults: ServerFaults, reader: conch.Coordinator, group_name: str,
    ) -> None:
        with joined_worker(faults.member_url, group_name) as (worker, worker_id):
            worker.send_signal(signal.SIGSTOP)
            gone = wait_until(lambda: worker_id not in reader.group(group_name).members(),
                              LOSS_BOUND, "the frozen member gone")
            worker.send_signal(signal.SIGCONT)
            back = wait_until(lambda: worker_id in reader.group(group_name).members(),
                              LOSS_BOUND, "the thawed member back")
        print(f"frozen: gone after {gone:.2f} s, back {back:.2f} s after thawing")

    def test_a_session_the_server_ended_while_idle_is_replaced_on_the_next_call(
        self, faults: ServerFaults, member: conch.Coordinator, group_name: str,
    ) -> None:
        member.group(group_name).create()
        time.sleep(faults.idle_limit + 1.5)  # no entry: nothing keeps the session busy
        assert member.group(group_name).members() == {}

    def test_a_hostile_name_of_256_bytes_and_the_largest_capabilities_round_trip(
        self, member: conch.Coordinator, reader: conch.Coordinator,
    ) -> None:
        name = ("/../*%_\n\t'\"\\;--é☃" * 20).encode()[:256]
        largest = {"blob": "x" * (64 * 1024 - 20)}  # about the largest capabilities allowed
        member.group(name).join(largest)
        assert reader.group(name).members() == {member.member_id: largest}
        member.group(name).join("in")
        assert reader.group(name).members() == {member.member_id: "in"}
        assert reader.group(name[:-1]).members() == {}
        assert name.decode("utf-8", "surrogateescape") in reader.groups()
        member.group(name).leave()

    def test_a_lock_named_like_the_group_is_another_thing(
        self, member: conch.Coordinator, reader: conch.Coordinator, group_name: str,
    ) -> None:
        member.group(group_name).join()
        with reader.lock(group_name)(blocking=False):
            assert member.member_id in reader.group(group_name).members()

    def test_a_forked_child_leaves_the_parents_entries_and_session_alone(
        self, member: conch.Coordinator, reader: conch.Coordinator, group_name: str,
    ) -> None:
        member.group(group_name).join("parent")
        results: multiprocessing.Queue[object] = multiprocessing.get_context("fork").Queue()

        def in_child() -> None:  # the child inherited the parent's started coordinator
            member.group(f"{group_name}-child").join("child")
            results.put(member.group(f"{group_name}-child").members())

        child = multiprocessing.get_context("fork").Process(target=in_child)
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert results.get(timeout=1) == {member.member_id: "child"}
        time.sleep(1.5)  # a few checks of the parent's entries
        assert not member.group(group_name).lost.is_set()
        assert member.group(group_name).members() == {member.member_id: "parent"}
        assert reader.group(group_name).members() == {member.member_id: "parent"}
