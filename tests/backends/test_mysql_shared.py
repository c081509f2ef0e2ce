"""mysql:// semaphores beyond the contract (and shared locks, which it does not offer): limits,
the permits' own names, a killed session and a server restart, the waiters' back-off,
stop() during a wait, and TLS."""

from __future__ import annotations

import pytest

import conch
from conch.backends.kit.naming import hex_digest
from conch.backends.mysql.semaphore import BACKOFF, PREFIX
from conch.url import parse_url
from tests.backends import hold_cases
from tests.backends.test_mysql import FAST_SESSION
from tests.servers.mysql import MySQLServer


@pytest.fixture
def server(mysql_server: MySQLServer, mysql_url: str) -> MySQLServer:
    """The server, running (``mysql_url`` restarts it if an earlier test stopped it)."""
    return mysql_server


def permit_holder(server: MySQLServer, name: str, slot: int) -> object:
    """The connection holding permit ``slot`` of semaphore ``name`` (``None``: free); the
    permit's ``GET_LOCK`` name is pinned here: a fleet must agree on it."""
    scoped = parse_url(server.url).path.lstrip("/").encode() + b"\0" + name.encode()
    permit = f"{PREFIX}{hex_digest(scoped, 48)}/{slot}"
    return server.execute(f"SELECT IS_USED_LOCK('{permit}')")[0][0]


def test_shared_locks_are_not_supported(server: MySQLServer) -> None:
    with pytest.raises(conch.NotSupported, match="shared_locks"):
        conch.connect(server.url, require=["shared_locks"])


def test_a_mismatched_limit_takes_nothing_and_a_new_limit_needs_no_holders(
    server: MySQLServer, lock_name: str
) -> None:
    hold_cases.another_limit_is_refused_while_held(server.url, lock_name)
    assert permit_holder(server, lock_name, 0) is None


def test_a_permit_and_a_lock_of_one_name_are_apart(server: MySQLServer, lock_name: str) -> None:
    hold_cases.a_permit_and_a_lock_of_one_name_are_apart(server.url, lock_name)


@pytest.mark.parametrize("fault", ["kill", "restart"])
def test_a_permit_lost_to_a_fault_is_reported_and_tokens_keep_increasing(
    server: MySQLServer, lock_name: str, fault: str
) -> None:
    with conch.connect(server.url_with(query=FAST_SESSION)) as coordinator:
        permit = coordinator.semaphore(lock_name, 2)
        assert permit.acquire()
        token = permit.token or 0
        if fault == "kill":
            server.execute(f"KILL CONNECTION {permit_holder(server, lock_name, 0)}")
        else:
            server.restart()
        assert permit.lost.wait(15.0)
        with pytest.raises(conch.LockLost):
            permit.release()
        assert permit_holder(server, lock_name, 0) is None
        assert permit.acquire(blocking=10.0)
        assert permit.token is not None and permit.token > token
        permit.release()


def test_a_waiter_backs_off_no_longer_than_its_cap(server: MySQLServer, lock_name: str) -> None:
    with conch.connect(server.url) as holder, conch.connect(server.url) as other:
        delays = hold_cases.handoffs(holder.semaphore(lock_name, 1),
                                     lambda: other.semaphore(lock_name, 1),
                                     wait=1.0)  # long enough for the pause to reach its cap
        assert max(delays) < BACKOFF[1] + 0.3, delays


def test_stop_ends_a_semaphore_wait(server: MySQLServer, lock_name: str) -> None:
    hold_cases.stop_ends_a_wait(server.url, lambda started: started.semaphore(lock_name, 1))


def test_a_limit_beyond_the_permits_a_statement_names_is_refused(server: MySQLServer) -> None:
    with conch.connect(server.url) as coordinator, pytest.raises(conch.NotSupported,
                                                                 match="up to 1000"):
        coordinator.semaphore("huge", 1001).acquire(blocking=False)


def test_semaphores_work_over_tls(mysql_tls_url: str, lock_name: str) -> None:
    hold_cases.a_release_lets_a_waiter_in(mysql_tls_url, lock_name)
