"""zookeeper:// shared locks and semaphores beyond the contract suite: a fleet with an older
conch (whose exclusive children are named as they always were), wake-ups by ZooKeeper's
watches, a server restart, and TLS."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient  # type: ignore[import-untyped]

import conch
from conch.backends.kit.naming import readable_key
from conch.backends.zookeeper.lock import CHILD
from conch.lock import lock_key
from conch.url import parse_url
from tests.backends.test_zookeeper import CREDENTIALS, queue_of
from tests.contract.waiting import HANDOFF_WITH_NOTIFY, Waiter
from tests.servers.base import wait_until
from tests.servers.zookeeper import ZooKeeperServer, start_zookeeper


@pytest.fixture
def zk_url(zookeeper_server: ZooKeeperServer) -> str:
    return zookeeper_server.url(credentials=CREDENTIALS)


@pytest.fixture
def admin(zookeeper_server: ZooKeeperServer) -> Iterator[KazooClient]:
    client = zookeeper_server.admin(CREDENTIALS)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def queue_as_older_conch(admin: KazooClient, url: str, name: str) -> str:
    """Queue an exclusive child as every conch release names it (a uuid4 prefix): the
    hold, or the wait, of an older conch in the fleet. Its path."""
    parent = f"{parse_url(url).path}/locks/{readable_key(lock_key(name))}"
    return str(admin.create(f"{parent}/{uuid.uuid4().hex}_", b"older conch", ephemeral=True,
                            sequence=True, makepath=True))


def test_an_older_conchs_exclusive_hold_keeps_shared_ones_out_and_its_release_wakes_them(
    zookeeper_server: ZooKeeperServer, zk_url: str, admin: KazooClient, lock_name: str
) -> None:
    with conch.connect(zk_url) as coordinator:
        older = queue_as_older_conch(admin, zk_url, lock_name)
        shared = coordinator.lock(lock_name, shared=True)
        assert shared.acquire(blocking=False) is False
        readers = [Waiter(coordinator.lock(lock_name, shared=True)) for _ in range(2)]
        wait_until(lambda: len(queue_of(zookeeper_server, zk_url, lock_name)) == 3, 10,
                   "the readers")
        released = time.monotonic()
        admin.delete(older)
        for reader in readers:  # woken by the watch on the older child, together
            assert reader.result(5) is True
            assert reader.returned_at - released < HANDOFF_WITH_NOTIFY
            reader.lock.release()


def test_shared_children_are_queue_places_an_older_conch_waits_behind(
    zookeeper_server: ZooKeeperServer, zk_url: str, admin: KazooClient, lock_name: str
) -> None:
    with conch.connect(zk_url) as coordinator:
        shared = coordinator.lock(lock_name, shared=True)
        assert shared.acquire(blocking=False)
        # An older conch lists the children its pattern matches and waits for every one
        # queued before its own: the shared child is one of them.
        assert all(CHILD.match(child) for child in queue_of(zookeeper_server, zk_url, lock_name))
        assert coordinator.describe(lock_name).holder is not None
        queue_as_older_conch(admin, zk_url, lock_name)  # an older conch's writer waits
        assert coordinator.lock(lock_name, shared=True).acquire(blocking=False) is False, \
            "a new shared hold overtook an older conch's waiting writer"
        shared.release()


def test_a_permit_waiter_is_woken_by_whichever_holder_releases(
    zk_url: str, lock_name: str
) -> None:
    with conch.connect(zk_url) as coordinator:
        oldest, youngest = coordinator.semaphore(lock_name, 2), coordinator.semaphore(lock_name, 2)
        assert oldest.acquire(blocking=False) and youngest.acquire(blocking=False)
        waiting = coordinator.semaphore(lock_name, 2)
        waiter = Waiter(waiting)  # type: ignore[arg-type]  # a lock's acquire
        time.sleep(0.3)
        released = time.monotonic()
        youngest.release()  # not the oldest child: the waiter watches every holder
        assert waiter.result(5) is True
        assert waiter.returned_at - released < HANDOFF_WITH_NOTIFY
        waiting.release()
        oldest.release()


def test_semaphores_and_locks_of_one_name_live_apart(zk_url: str, lock_name: str) -> None:
    with conch.connect(zk_url) as coordinator, coordinator.lock(lock_name), \
            coordinator.semaphore(lock_name, 1):
        assert [info.name for info in coordinator.holders()] == [lock_name]


@pytest.mark.timeout(90)
def test_after_a_server_restart_shared_holders_are_told_and_a_writer_takes_over(
    lock_name: str
) -> None:
    server = start_zookeeper()  # of this test alone
    try:
        restart_with_shared_holders_and_a_writer(server, lock_name)
    finally:
        server.cleanup()


def restart_with_shared_holders_and_a_writer(server: ZooKeeperServer, lock_name: str) -> None:
    holder_url = server.url(chroot="/faults", credentials=CREDENTIALS, timeout=2)
    with conch.connect(holder_url) as readers, \
            conch.connect(server.url(chroot="/faults", credentials=CREDENTIALS)) as writers:
        shared = [readers.lock(lock_name, shared=True) for _ in range(2)]
        assert all(hold.acquire(blocking=False) for hold in shared)
        tokens = [hold.token or 0 for hold in shared]
        writer = Waiter(writers.lock(lock_name))
        wait_until(lambda: len(queue_of(server, holder_url, lock_name)) == 3, 10, "the writer")
        server.restart()
        for hold in shared:
            assert hold.lost.wait(10), "a shared holder was not told"
        assert writer.result(30) is True
        assert writer.lock.token is not None
        assert writer.lock.token > max(tokens)
        for hold in shared:
            with pytest.raises(conch.LockLost):
                hold.release()
        writer.lock.release()
        assert shared[0].acquire(blocking=10), "the readers' coordinator works again"
        shared[0].release()


def test_shared_holds_and_permits_over_tls(zookeeper_tls_url: str, lock_name: str) -> None:
    with conch.connect(zookeeper_tls_url) as coordinator:
        with coordinator.lock(lock_name, shared=True), coordinator.lock(lock_name, shared=True):
            assert coordinator.lock(lock_name).acquire(blocking=False) is False
        with coordinator.semaphore(lock_name, 2), coordinator.semaphore(lock_name, 2):
            assert coordinator.semaphore(lock_name, 2).acquire(blocking=0.2) is False

