"""zookeeper:// shared locks and semaphores beyond the contract suite: a fleet with an older
conch (whose exclusive children are named as they always were), wake-ups by ZooKeeper's
watches, a server restart, and TLS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient  # type: ignore[import-untyped]

import conch
from conch.backends.kit.naming import readable_key
from conch.backends.zookeeper.lock import CHILD
from conch.lock import lock_key
from conch.url import parse_url
from tests.backends.shared_scenarios import (
    a_new_reader_waits_behind_an_older_writer,
    own_server,
    readers_wake_when_the_older_hold_goes,
)
from tests.backends.test_zookeeper import CREDENTIALS, queue_of
from tests.backends.test_zookeeper_groups import admin_client
from tests.contract.waiting import Waiter
from tests.servers.base import wait_until
from tests.servers.zookeeper import ZooKeeperServer, start_zookeeper


@pytest.fixture
def zk_url(zookeeper_server: ZooKeeperServer) -> str:
    return zookeeper_server.url(credentials=CREDENTIALS)


@pytest.fixture
def admin(zookeeper_server: ZooKeeperServer) -> Iterator[KazooClient]:
    with admin_client(zookeeper_server, CREDENTIALS) as client:
        yield client


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
        readers_wake_when_the_older_hold_goes(
            coordinator, lock_name, lambda: len(queue_of(zookeeper_server, zk_url, lock_name)),
            lambda: admin.delete(older))


def test_shared_children_are_queue_places_an_older_conch_waits_behind(
    zookeeper_server: ZooKeeperServer, zk_url: str, admin: KazooClient, lock_name: str
) -> None:
    with conch.connect(zk_url) as coordinator:
        shared = coordinator.lock(lock_name, shared=True)
        assert shared.acquire(blocking=False)
        # An older conch lists the children its pattern matches and waits for every one
        # queued before its own: the shared child is one of them.
        assert all(CHILD.match(child) for child in queue_of(zookeeper_server, zk_url, lock_name))
        a_new_reader_waits_behind_an_older_writer(
            coordinator, lock_name, lambda: queue_as_older_conch(admin, zk_url, lock_name))
        shared.release()


@pytest.mark.timeout(90)
def test_after_a_server_restart_shared_holders_are_told_and_a_writer_takes_over(
    lock_name: str
) -> None:
    with own_server(start_zookeeper) as server:
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
