"""zookeeper:// beyond the contract suite: queue order, clean-up, faults of a real server."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]

import conch
from conch.backends.kit.naming import readable_key
from conch.backends.zookeeper.lock import sequence_distance
from conch.lock import lock_key
from conch.url import parse_url
from tests.chaos.proxy import Proxy
from tests.contract import workers
from tests.contract.waiting import Waiter
from tests.servers.base import free_port, wait_until
from tests.servers.zookeeper import ZooKeeperServer, start_zookeeper

CREDENTIALS = "conch:zk-test-secret"


@pytest.fixture
def server() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper of this test alone, which it may pause or restart."""
    started = start_zookeeper()
    try:
        yield started
    finally:
        started.cleanup()


@pytest.fixture
def zk_url(zookeeper_server: ZooKeeperServer) -> str:
    """A fresh chroot on the shared server, with known credentials."""
    return zookeeper_server.url(credentials=CREDENTIALS)


def queue_of(server: ZooKeeperServer, url: str, name: str) -> list[str]:
    """The children (holder first) of lock ``name``'s znode, read with a client of our own."""
    parent = f"{parse_url(url).path}/locks/{readable_key(lock_key(name))}"
    admin = server.admin(CREDENTIALS)
    try:
        return sorted(admin.get_children(parent), key=lambda child: int(child.split("_")[1]))
    except NoNodeError:
        return []
    finally:
        admin.stop()
        admin.close()


def session_of(coordinator: conch.Coordinator) -> KazooClient:
    """The kazoo client behind a started coordinator (its one ZooKeeper session)."""
    backend = coordinator._backend
    assert backend is not None
    return backend.session.client  # type: ignore[attr-defined]


# --- the queue -----------------------------------------------------------------------------


def test_two_lock_objects_of_one_coordinator_queue_separately_and_exclude_each_other(
    zookeeper_server: ZooKeeperServer, zk_url: str, lock_name: str
) -> None:
    with conch.connect(zk_url) as coordinator:
        first, second = coordinator.lock(lock_name), coordinator.lock(lock_name)
        assert first.acquire(blocking=False)
        waiter = Waiter(second, blocking=10)
        wait_until(lambda: len(queue_of(zookeeper_server, zk_url, lock_name)) == 2, 10,
                   "the second object's queue node")
        assert waiter.waiting
        first_token = first.token
        first.release()
        assert waiter.result(5) is True
        assert second.token is not None and first_token is not None
        assert second.token > first_token
        second.release()
    assert queue_of(zookeeper_server, zk_url, lock_name) == []


def test_waiters_are_granted_the_lock_in_the_order_they_queued(
    zookeeper_server: ZooKeeperServer, zk_url: str, lock_name: str
) -> None:
    granted: list[int] = []
    with conch.connect(zk_url) as holder_side, conch.connect(zk_url) as waiter_side:
        holder = holder_side.lock(lock_name)
        assert holder.acquire(blocking=False)

        def wait_then_record(index: int, lock: conch.Lock) -> None:
            assert lock.acquire(blocking=30)
            granted.append(index)
            lock.release()

        threads = []
        for index in range(4):
            lock = waiter_side.lock(lock_name)
            thread = threading.Thread(target=wait_then_record, args=(index, lock))
            thread.start()
            threads.append(thread)

            def queued(length: int = index + 2) -> bool:
                return len(queue_of(zookeeper_server, zk_url, lock_name)) == length

            wait_until(queued, 10, f"waiter {index} in the queue")
        holder.release()
        for thread in threads:
            thread.join(30)
    assert granted == [0, 1, 2, 3]


def test_timed_out_and_non_blocking_waiters_leave_no_znode_behind(
    zookeeper_server: ZooKeeperServer, zk_url: str, lock_name: str
) -> None:
    with conch.connect(zk_url) as holder_side, conch.connect(zk_url) as waiter_side:
        holder = holder_side.lock(lock_name)
        assert holder.acquire(blocking=False)
        holders_node = queue_of(zookeeper_server, zk_url, lock_name)
        waiters = [Waiter(waiter_side.lock(lock_name), blocking=0.3) for _ in range(3)]
        assert waiter_side.lock(lock_name).acquire(blocking=False) is False
        assert [waiter.result(10) for waiter in waiters] == [False] * 3
        # A waiter that gives up deletes its node without waiting for the answer.
        wait_until(lambda: queue_of(zookeeper_server, zk_url, lock_name) == holders_node, 10,
                   "only the holder's node left")
        holder.release()
    assert queue_of(zookeeper_server, zk_url, lock_name) == []


def test_tokens_keep_increasing_when_the_lock_znode_is_deleted_and_recreated(
    zookeeper_server: ZooKeeperServer, zk_url: str, lock_name: str
) -> None:
    with conch.connect(zk_url) as coordinator:
        lock = coordinator.lock(lock_name)
        with lock:
            before = lock.token
        admin = zookeeper_server.admin(CREDENTIALS)
        try:  # an operator sweeping empty lock znodes
            admin.delete(f"{parse_url(zk_url).path}/locks/{readable_key(lock_key(lock_name))}")
        finally:
            admin.stop()
            admin.close()
        with lock:
            assert lock.token is not None and before is not None
            assert lock.token > before


def test_sequence_numbers_compare_across_the_counter_wrap() -> None:
    assert sequence_distance(5, 9) == -4
    assert sequence_distance(2147483647, -2147483648) == -1  # created just before the wrap
    assert sequence_distance(-2147483648, 2147483647) == 1


# --- faults --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_killed_holder_process_frees_its_lock_once_its_session_times_out(
    zookeeper_server: ZooKeeperServer, lock_name: str
) -> None:
    short_session = zookeeper_server.url(credentials=CREDENTIALS, timeout=2)
    holder = workers.spawn(short_session, "hold", lock_name)
    try:
        dead_holders_token = int(workers.expect(holder, "held "))
        with conch.connect(short_session) as coordinator:
            lock = coordinator.lock(lock_name)
            assert lock.acquire(blocking=False) is False
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            killed = time.monotonic()
            assert lock.acquire(blocking=15)
            freed_after = time.monotonic() - killed
            assert lock.token is not None and lock.token > dead_holders_token
            lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
    # Not session-bound: the server keeps a dead client's session for its timeout
    # (it may reconnect elsewhere), then deletes its nodes and wakes the next waiter.
    assert 1.0 < freed_after < 2 + 4, f"freed {freed_after:.2f} s after the kill"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["pause", "restart"])
def test_a_server_fault_is_reported_to_the_holder_and_a_waiter_acquires_after_it(
    server: ZooKeeperServer, lock_name: str, fault: str
) -> None:
    holder_url = server.url(chroot="/faults", credentials=CREDENTIALS, timeout=2)
    with conch.connect(holder_url) as holder_side, \
            conch.connect(server.url(chroot="/faults", credentials=CREDENTIALS)) as waiter_side:
        holder = holder_side.lock(lock_name)
        assert holder.acquire(blocking=False)
        first_token = holder.token
        waiter = Waiter(waiter_side.lock(lock_name), blocking=True)
        wait_until(lambda: len(queue_of(server, holder_url, lock_name)) == 2, 10, "the waiter")
        if fault == "pause":
            server.pause()
            try:  # kazoo drops a connection after 2/3 of the session timeout without pings
                assert holder.lost.wait(10), "the holder was not told"
            finally:
                server.resume()
        else:
            server.restart()
            assert holder.lost.wait(10), "the holder was not told"
        assert not holder.held and holder.token is None
        assert waiter.result(30) is True
        assert waiter.lock.token is not None and first_token is not None
        assert waiter.lock.token > first_token
        with pytest.raises(conch.LockLost):
            holder.release()
        # The lost hold's node is gone (deleted on reconnection, or with its session).
        assert len(queue_of(server, holder_url, lock_name)) == 1
        waiter.lock.release()
        assert holder.acquire(blocking=10), "the holder's coordinator works again"
        holder.release()


@pytest.mark.timeout(90)
def test_a_waiter_rides_out_a_server_pause_its_session_survives_and_acquires_after_release(
    server: ZooKeeperServer, lock_name: str
) -> None:
    # The waiter's connection drops during the pause (SUSPENDED: no ping answer for
    # 2/3 of 6 s at most), the holder's does not (30 s): the waiter keeps its place,
    # its znode lives on in its session, and it holds once the holder releases.
    holder_url = server.url(chroot="/ride", credentials=CREDENTIALS, timeout=30)
    waiter_url = server.url(chroot="/ride", credentials=CREDENTIALS, timeout=6)
    with conch.connect(holder_url) as holder_side, conch.connect(waiter_url) as waiter_side:
        holder = holder_side.lock(lock_name)
        assert holder.acquire(blocking=False)
        waiter = Waiter(waiter_side.lock(lock_name), blocking=60)
        wait_until(lambda: len(queue_of(server, holder_url, lock_name)) == 2, 10, "the waiter")
        queued = queue_of(server, holder_url, lock_name)
        client = session_of(waiter_side)
        session_id = client.client_id[0]
        server.pause()
        try:
            wait_until(lambda: client.state == "SUSPENDED", 10, "the waiter's connection drop")
        finally:
            server.resume()
        wait_until(lambda: client.state == "CONNECTED", 10, "the waiter's reconnection")
        time.sleep(0.5)
        assert waiter.waiting, "the waiter gave up during the pause"
        assert client.client_id[0] == session_id, "the waiter's session expired"
        assert queue_of(server, holder_url, lock_name) == queued
        assert not holder.lost.is_set()
        holder.release()
        assert waiter.result(10) is True
        assert waiter.lock.token is not None
        waiter.lock.release()


@pytest.mark.timeout(60)
def test_a_waiter_whose_request_is_cut_off_on_the_wire_keeps_its_place_and_acquires(
    zookeeper_server: ZooKeeperServer, zk_url: str, lock_name: str
) -> None:
    # The reply to the waiter's watch on the holder's znode is lost and its connection
    # reset: kazoo fails that request (ConnectionLoss), reconnects, and the session
    # (with the waiter's znode) lives on, so the wait goes on.
    with Proxy(zookeeper_server.port) as link, conch.connect(zk_url) as holder_side, \
            conch.connect(zk_url.replace(zookeeper_server.hosts, f"127.0.0.1:{link.port}")) \
            as waiter_side:
        holder = holder_side.lock(lock_name)
        assert holder.acquire(blocking=False)
        (holder_node,) = queue_of(zookeeper_server, zk_url, lock_name)
        client = session_of(waiter_side)
        session_id = client.client_id[0]
        link.drop_next_reply(containing=holder_node.encode())
        waiter = Waiter(waiter_side.lock(lock_name), blocking=30)
        wait_until(lambda: link.reply_dropped, 10, "the waiter's watch request")
        wait_until(lambda: len(queue_of(zookeeper_server, zk_url, lock_name)) == 2
                   and client.state == "CONNECTED", 10, "the waiter's reconnection")
        time.sleep(0.3)
        assert waiter.waiting, f"the waiter gave up: {waiter.error!r}"
        assert client.client_id[0] == session_id
        first_token = holder.token
        holder.release()
        assert waiter.result(10) is True
        assert waiter.lock.token is not None and first_token is not None
        assert waiter.lock.token > first_token
        waiter.lock.release()


@pytest.mark.timeout(60)
def test_an_expired_session_is_reported_as_loss_and_the_coordinator_recovers(
    zookeeper_server: ZooKeeperServer, zk_url: str, lock_name: str
) -> None:
    with conch.connect(zk_url) as holder_side, conch.connect(zk_url) as other_side:
        holder = holder_side.lock(lock_name)
        assert holder.acquire(blocking=False)
        # Expire the holder's session the way ZooKeeper's own tests do: another
        # client attaches to it and closes it.
        session_id, password = session_of(holder_side).client_id
        thief = KazooClient(zookeeper_server.hosts, client_id=(session_id, password))
        thief.start(timeout=10)
        thief.stop()
        thief.close()
        assert holder.lost.wait(15), "the holder was not told"
        other = other_side.lock(lock_name)
        assert other.acquire(blocking=10)
        with pytest.raises(conch.LockLost):
            holder.release()
        other.release()
        assert holder.acquire(blocking=15), "a new session replaced the expired one"
        holder.release()


@pytest.mark.timeout(90)
def test_a_wiped_server_loses_every_hold_and_the_coordinators_come_back_in_new_sessions(
    server: ZooKeeperServer, lock_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The wiped server refuses the old sessions (it has seen none of their zxids) and kazoo
    # would retry them for ever: conch opens new sessions once the old ones are past help.
    url = server.url(chroot="/wiped", credentials=CREDENTIALS, timeout=2)
    with conch.connect(url) as holder_side, conch.connect(url) as waiter_side:
        holder = holder_side.lock(lock_name)
        assert holder.acquire(blocking=False)
        for _ in range(20):  # zxids to lose: the wiped server's are behind ours
            with holder_side.lock(lock_name + "-other"):
                pass
        waiter = Waiter(waiter_side.lock(lock_name), blocking=30)
        wait_until(lambda: len(queue_of(server, url, lock_name)) == 2, 10, "the waiter")
        old_session = session_of(holder_side).client_id[0]
        server.wipe()
        assert holder.lost.wait(10), "the holder was not told"
        assert waiter.result(20) is True, f"the waiter gave up: {waiter.error!r}"
        assert waiter.lock.token is not None
        wait_until(lambda: (session_of(holder_side).client_id or (old_session,))[0]
                   != old_session, 10, "the holder's new session")
        with pytest.raises(conch.LockLost):
            holder.release()
        waiter.lock.release()
        assert holder.acquire(blocking=10), "the holder's coordinator works again"
        holder.release()
    assert "fencing tokens start over" in caplog.text


@pytest.mark.timeout(60)
def test_a_timed_wait_ends_on_time_while_the_server_is_paused(
    server: ZooKeeperServer, lock_name: str
) -> None:
    url = server.url(chroot="/paused", credentials=CREDENTIALS, timeout=2)
    with conch.connect(url) as holder_side, conch.connect(url) as waiter_side:
        assert holder_side.lock(lock_name).acquire(blocking=False)
        waiter = Waiter(waiter_side.lock(lock_name), blocking=3)
        wait_until(lambda: len(queue_of(server, url, lock_name)) == 2, 10, "the waiter")
        started = time.monotonic()
        server.pause()
        try:
            assert waiter.result(10) is False
            waited = waiter.returned_at - started
        finally:
            server.resume()
    assert waited < 3 + 1.5, f"a 3 s wait returned after {waited:.2f} s"


@pytest.mark.timeout(60)
def test_acquire_on_a_paused_server_fails_within_the_session_timeout(
    server: ZooKeeperServer, lock_name: str
) -> None:
    with conch.connect(server.url(credentials=CREDENTIALS, timeout=2)) as coordinator:
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(conch.BackendUnavailable, match=server.hosts):
                coordinator.lock(lock_name).acquire(blocking=True)
            failed_after = time.monotonic() - started
        finally:
            server.resume()
    assert failed_after < 2 + 1.5, f"failed after {failed_after:.2f} s"


@pytest.mark.timeout(60)
def test_stopping_the_coordinator_of_a_waiter_ends_its_wait_with_not_started(
    zookeeper_server: ZooKeeperServer, zk_url: str, lock_name: str
) -> None:
    with conch.connect(zk_url) as holder_side:
        assert holder_side.lock(lock_name).acquire(blocking=False)
        waiter_side = conch.connect(zk_url)
        waiter = Waiter(waiter_side.lock(lock_name), blocking=True)
        wait_until(lambda: len(queue_of(zookeeper_server, zk_url, lock_name)) == 2, 10, "waiter")
        waiter_side.stop()
        with pytest.raises(conch.NotStarted, match="stopped while lock"):
            waiter.result(10)
        assert len(queue_of(zookeeper_server, zk_url, lock_name)) == 1


@pytest.mark.timeout(60)
def test_stop_returns_soon_while_the_server_is_paused(
    server: ZooKeeperServer, lock_name: str
) -> None:
    coordinator = conch.connect(server.url(credentials=CREDENTIALS, timeout=2))
    lock = coordinator.lock(lock_name)
    assert lock.acquire(blocking=False)
    server.pause()
    try:
        started = time.monotonic()
        coordinator.stop()
        stopped_after = time.monotonic() - started
    finally:
        server.resume()
    assert lock.lost.is_set()
    assert stopped_after < 5, f"stop() took {stopped_after:.2f} s"


# --- connecting ----------------------------------------------------------------------------


def test_an_unreachable_server_fails_start_within_the_connect_timeout() -> None:
    port = free_port()
    url = f"zookeeper://conch:hunter2-secret@127.0.0.1:{port}/x?connect_timeout=1"
    started = time.monotonic()
    with pytest.raises(conch.BackendUnavailable) as raised:
        conch.connect(url)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message and "1 s" in message
    assert "hunter2" not in message


def test_wrong_credentials_fail_start_with_a_clear_message(
    zookeeper_server: ZooKeeperServer,
) -> None:
    chroot = f"/guarded-{time.monotonic_ns()}"
    with conch.connect(zookeeper_server.url(chroot=chroot, credentials="conch:right")):
        pass  # creates the chroot, readable by conch:right only
    wrong = zookeeper_server.url(chroot=chroot, credentials="conch:wrong-secret")
    with pytest.raises(conch.BackendUnavailable, match="not authorized") as raised:
        conch.connect(wrong)
    assert "wrong-secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("zookeeper:///conch", "at least one host"),
        ("zookeeper://127.0.0.1:2181/conch?ttl=3", "unknown option ttl"),
        ("zookeeper://127.0.0.1:2181/conch?timeout=-1", "timeout must be a positive"),
        ("zookeeper://127.0.0.1:2181/conch?connect_timeout=soon", "connect_timeout"),
        ("zookeeper://127.0.0.1:2181/a//b", "not a valid ZooKeeper path"),
        ("zookeeper://127.0.0.1:2181/a/../b", "not a valid ZooKeeper path"),
        ("zookeeper://127.0.0.1:2181/zookeeper/x", "reserved"),
        ("zookeeper://conch@127.0.0.1:2181/conch", "user:password"),
    ],
)
def test_malformed_urls_raise_invalid_url(url: str, complaint: str) -> None:
    with pytest.raises(conch.InvalidURL, match=complaint):
        conch.connect(url)  # checked before any I/O
