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
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import conch
from tests.backends.group_faults import (
    HOSTILE_NAME,
    group_and_lock_of_one_name_stay_apart,
    lost_and_joined_again,
)
from tests.contract import workers
from tests.servers.base import wait_until

LOSS_BOUND = 15.0
"""Seconds within which a member hears of a fault and is back in its group (loaded machine)."""


@dataclasses.dataclass
class ServerFaults(abc.ABC):
    """One backend's shared test server (tests/servers), and what a test can do to it behind
    its members' backs; each fault is given the member it is meant to hurt."""

    server: Any
    member_query: ClassVar[str]
    """The URL query of a coordinator that checks its entries about every second."""

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
        self, faults: ServerFaults, reader: conch.Coordinator, group_name: str, fault: str,
    ) -> None:
        took = lost_and_joined_again(faults.member_url, group_name, getattr(faults, fault),
                                     LOSS_BOUND)
        print(f"{fault}: told and back within {took:.2f} s")
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

    def test_the_largest_capabilities_round_trip_under_a_hostile_name(
        self, member: conch.Coordinator, reader: conch.Coordinator,
    ) -> None:
        largest = {"blob": "x" * (64 * 1024 - 20)}  # about the largest capabilities allowed
        member.group(HOSTILE_NAME).join(largest)
        assert reader.group(HOSTILE_NAME).members() == {member.member_id: largest}
        assert reader.group(HOSTILE_NAME[:-1]).members() == {}
        member.group(HOSTILE_NAME).leave()

    def test_a_group_and_a_lock_of_one_name_stay_apart(self, faults: ServerFaults) -> None:
        group_and_lock_of_one_name_stay_apart(faults.url)

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
