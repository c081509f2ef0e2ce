"""mysql:// semaphores beyond the contract (and shared locks, which it does not offer): limits,
the permits' own names, a killed session and a server restart, the waiters' back-off,
stop() during a wait, and TLS."""

from __future__ import annotations

import time

import pytest

import conch
from conch.backends.kit.naming import hex_digest
from conch.backends.mysql.semaphore import BACKOFF, PREFIX
from conch.url import parse_url
from tests.backends.test_mysql import FAST_SESSION
from tests.contract.waiting import Waiter
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


def waiter_for(permit: conch.Semaphore, blocking: float | bool) -> Waiter:
    """``permit.acquire(blocking)`` on a thread."""
    return Waiter(permit, blocking)  # type: ignore[arg-type]  # a semaphore acquires alike


def test_shared_locks_are_not_supported(server: MySQLServer) -> None:
    with pytest.raises(conch.NotSupported, match="shared_locks"):
        conch.connect(server.url, require=["shared_locks"])


def test_a_mismatched_limit_takes_nothing_and_a_new_limit_needs_no_holders(
    server: MySQLServer, lock_name: str
) -> None:
    with conch.connect(server.url) as coordinator:
        held = coordinator.semaphore(lock_name, 2)
        assert held.acquire()
        with pytest.raises(conch.LimitMismatch, match="limit 2, not 3"):
            coordinator.semaphore(lock_name, 3).acquire(blocking=5)
        second = coordinator.semaphore(lock_name, 2)
        assert second.acquire(blocking=False)
        assert coordinator.semaphore(lock_name, 2).acquire(blocking=False) is False
        second.release()
        held.release()
        other_limit = coordinator.semaphore(lock_name, 3)
        assert other_limit.acquire(blocking=False)
        other_limit.release()


def test_a_permit_and_a_lock_of_one_name_are_apart(server: MySQLServer, lock_name: str) -> None:
    with conch.connect(server.url) as coordinator:
        lock, permit = coordinator.lock(lock_name), coordinator.semaphore(lock_name, 1)
        assert lock.acquire(blocking=False) and permit.acquire(blocking=False)
        assert [info.name for info in coordinator.holders(lock_name)] == [lock_name]
        lock.release()
        permit.release()


def test_a_killed_session_costs_the_permit_and_release_says_so(
    server: MySQLServer, lock_name: str
) -> None:
    with conch.connect(server.url_with(query=FAST_SESSION)) as coordinator:
        permit = coordinator.semaphore(lock_name, 1)
        assert permit.acquire()
        connection = permit_holder(server, lock_name, 0)
        assert connection is not None
        server.execute(f"KILL CONNECTION {connection}")
        assert permit.lost.wait(10.0)
        with pytest.raises(conch.LockLost):
            permit.release()
        assert permit_holder(server, lock_name, 0) is None
        assert permit.acquire(blocking=False)
        permit.release()


def test_tokens_keep_increasing_across_a_server_restart(
    server: MySQLServer, lock_name: str
) -> None:
    with conch.connect(server.url_with(query=FAST_SESSION)) as coordinator:
        permit = coordinator.semaphore(lock_name, 2)
        assert permit.acquire()
        token = permit.token or 0
        server.restart()
        assert permit.lost.wait(15.0)
        with pytest.raises(conch.LockLost):
            permit.release()
        assert permit.acquire(blocking=10.0)
        assert permit.token is not None and permit.token > token
        permit.release()


def test_a_waiter_backs_off_no_longer_than_its_cap(server: MySQLServer, lock_name: str) -> None:
    with conch.connect(server.url) as holder, conch.connect(server.url) as other:
        permit = holder.semaphore(lock_name, 1)
        delays = []
        for _ in range(3):
            assert permit.acquire()
            waiter = waiter_for(other.semaphore(lock_name, 1), 10)
            time.sleep(1.0)  # long enough for the pause to reach its cap
            started = time.monotonic()
            permit.release()
            assert waiter.result(timeout=5.0)
            delays.append(time.monotonic() - started)
            waiter.lock.release()
        assert max(delays) < BACKOFF[1] + 0.3, delays


def test_stop_ends_a_semaphore_wait(server: MySQLServer, lock_name: str) -> None:
    with conch.connect(server.url) as holder:
        assert holder.semaphore(lock_name, 1).acquire()
        coordinator = conch.connect(server.url)
        waiter = waiter_for(coordinator.semaphore(lock_name, 1), True)
        time.sleep(0.3)
        started = time.monotonic()
        coordinator.stop()
        with pytest.raises(conch.NotStarted):
            waiter.result(timeout=5.0)
        assert time.monotonic() - started < 2.0


def test_a_limit_beyond_the_permits_a_statement_names_is_refused(server: MySQLServer) -> None:
    with conch.connect(server.url) as coordinator, pytest.raises(conch.NotSupported,
                                                                 match="up to 1000"):
        coordinator.semaphore("huge", 1001).acquire(blocking=False)


def test_semaphores_work_over_tls(mysql_tls_url: str, lock_name: str) -> None:
    with conch.connect(mysql_tls_url) as one, conch.connect(mysql_tls_url) as two:
        permit = one.semaphore(lock_name, 1)
        assert permit.acquire(blocking=False)
        waiter = waiter_for(two.semaphore(lock_name, 1), 5)
        time.sleep(0.2)
        permit.release()
        assert waiter.result(timeout=5.0)
        waiter.lock.release()
