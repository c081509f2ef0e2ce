"""postgresql:// shared locks and semaphores beyond the contract: a fleet with an older conch
(its exclusive holds on the same key), wake-ups by the server, a server restart, limits,
the semaphores' own key space, stop() during a wait, and TLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import conch
from conch.backends.kit.naming import int64_key
from tests.backends import hold_cases
from tests.backends.test_postgresql_groups import tls_url as tls_url
from tests.contract.waiting import Waiter
from tests.servers.postgresql import DATABASE, PostgreSQLServer


@pytest.fixture
def server(postgresql_server: PostgreSQLServer, postgresql_url: str) -> PostgreSQLServer:
    """The server, running (``postgresql_url`` restarts it if an earlier test stopped it)."""
    return postgresql_server


@pytest.fixture
def old_conch(server: PostgreSQLServer) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A session that takes a lock the way every earlier conch does: the name's bigint key,
    exclusive, with the same token sequence."""
    with server.admin(DATABASE) as session:
        yield session


def semaphore_rows(server: PostgreSQLServer) -> int:
    """Granted advisory locks in the two-int key space (semaphore permits and markers)."""
    (count,), = server.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                               " AND objsubid = 2 AND granted")
    assert isinstance(count, int)
    return count


def test_an_older_conchs_exclusive_lock_and_new_shared_holds_exclude_each_other(
    server: PostgreSQLServer, old_conch: psycopg.Connection[tuple[object, ...]], lock_name: str
) -> None:
    key = int64_key(lock_name.encode())
    with conch.connect(server.url) as coordinator:
        shared = coordinator.lock(lock_name, shared=True)
        old_conch.execute("SELECT pg_advisory_lock(%s)", (key,))
        assert shared.acquire(blocking=0.2) is False
        old_conch.execute("SELECT pg_advisory_unlock(%s)", (key,))
        assert shared.acquire(blocking=False)
        assert old_conch.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (False,)
        # Its wait holds new shared holds back, as a new conch's does (the server's queue).
        waiting = threading.Thread(
            target=old_conch.execute, args=("SELECT pg_advisory_lock(%s)", (key,)))
        waiting.start()
        time.sleep(0.3)
        assert coordinator.lock(lock_name, shared=True).acquire(blocking=0.2) is False
        shared.release()
        waiting.join(5.0)
        assert not waiting.is_alive()
        old_conch.execute("SELECT pg_advisory_unlock(%s)", (key,))


def test_a_shared_waiter_is_woken_by_the_server(server: PostgreSQLServer, lock_name: str) -> None:
    with conch.connect(server.url) as writer, conch.connect(server.url) as reader:
        delays = hold_cases.handoffs(writer.lock(lock_name),
                                     lambda: reader.lock(lock_name, shared=True))
        assert min(delays) < 0.3, delays


def test_a_semaphore_waiter_is_woken_by_notify_before_its_recheck(
    server: PostgreSQLServer, lock_name: str
) -> None:
    with conch.connect(server.url) as holder, conch.connect(server.url) as other:
        delays = hold_cases.handoffs(holder.semaphore(lock_name, 1),
                                     lambda: other.semaphore(lock_name, 1))
        assert min(delays) < 0.3, delays  # the recheck comes a second after the last try


def test_a_server_restart_reports_shared_and_permit_holds_lost(
    server: PostgreSQLServer, lock_name: str
) -> None:
    with conch.connect(server.url_with(query="heartbeat=0.5")) as coordinator:
        shared = coordinator.lock(lock_name, shared=True)
        permit = coordinator.semaphore(lock_name, 2)
        assert shared.acquire() and permit.acquire()
        tokens = (shared.token or 0, permit.token or 0)
        server.restart()
        assert shared.lost.wait(10.0) and permit.lost.wait(10.0)
        for hold in (shared, permit):
            with pytest.raises(conch.LockLost):
                hold.release()
        assert shared.acquire(blocking=5.0) and permit.acquire(blocking=5.0)
        assert min(shared.token or 0, permit.token or 0) > max(tokens)
        shared.release()
        permit.release()


def test_a_mismatched_limit_takes_nothing_and_a_new_limit_needs_no_holders(
    server: PostgreSQLServer, lock_name: str
) -> None:
    before = semaphore_rows(server)
    hold_cases.another_limit_is_refused_while_held(server.url, lock_name)
    assert semaphore_rows(server) == before  # no permit or marker left behind


def test_a_hold_is_a_permit_and_its_limits_marker(server: PostgreSQLServer, lock_name: str
                                                  ) -> None:
    before = semaphore_rows(server)
    with conch.connect(server.url) as coordinator:
        permit = coordinator.semaphore(lock_name, 2)
        assert permit.acquire()
        assert semaphore_rows(server) == before + 2
        with pytest.raises(conch.LimitMismatch):  # its statement stops at the check
            coordinator.semaphore(lock_name, 3).acquire(blocking=False)
        assert semaphore_rows(server) == before + 2
        permit.release()
        assert semaphore_rows(server) == before


def test_a_waiter_with_another_limit_is_refused_too(
    server: PostgreSQLServer, lock_name: str
) -> None:
    with conch.connect(server.url) as coordinator:
        held = coordinator.semaphore(lock_name, 1)
        assert held.acquire()
        waiter = Waiter(coordinator.semaphore(lock_name, 1), 10)
        time.sleep(0.2)
        held.release()
        assert waiter.result(timeout=5.0)
        with pytest.raises(conch.LimitMismatch, match="limit 1, not 2"):
            coordinator.semaphore(lock_name, 2).acquire(blocking=False)
        waiter.lock.release()


def test_a_semaphore_and_a_lock_of_one_name_are_apart(
    server: PostgreSQLServer, lock_name: str
) -> None:
    hold_cases.a_permit_and_a_lock_of_one_name_are_apart(server.url, lock_name)


def test_stop_ends_a_semaphore_wait(server: PostgreSQLServer, lock_name: str) -> None:
    hold_cases.stop_ends_a_wait(server.url, lambda started: started.semaphore(lock_name, 1))


def test_a_limit_beyond_the_key_space_is_refused(server: PostgreSQLServer) -> None:
    with conch.connect(server.url) as coordinator, pytest.raises(conch.NotSupported,
                                                                 match="below 2"):
        coordinator.semaphore("huge", 2**31).acquire(blocking=False)


def test_shared_locks_and_semaphores_work_over_tls(tls_url: str, lock_name: str) -> None:
    with conch.connect(tls_url) as one, conch.connect(tls_url) as two:
        first, second = one.lock(lock_name, shared=True), two.lock(lock_name, shared=True)
        assert first.acquire(blocking=False) and second.acquire(blocking=False)
        first.release()
        second.release()
    hold_cases.a_release_lets_a_waiter_in(tls_url, lock_name)
