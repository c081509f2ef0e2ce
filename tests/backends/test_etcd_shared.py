"""etcd:// shared locks and semaphores beyond the contract suite: a fleet with an older conch
(whose exclusive keys are named as they always were), wake-ups by etcd's watches, a server
restart, and TLS."""

from __future__ import annotations

import base64
import time

import pytest

import conch
from tests.backends.shared_scenarios import (
    a_new_reader_waits_behind_an_older_writer,
    own_server,
    readers_wake_when_the_older_hold_goes,
)
from tests.backends.test_etcd import name_keys
from tests.contract.waiting import Waiter
from tests.servers.etcd import EtcdServer, start_etcd


def queue_as_older_conch(server: EtcdServer, url: str, name: str) -> str:
    """Queue an exclusive key as every conch release names it (``<lease id hex>-<n>``, on
    a lease): the hold, or the wait, of an older conch in the fleet. The key."""
    lease = int(server.call("/v3/lease/grant", {"TTL": 30})["ID"])
    key = name_keys(server, url, name)[0].rpartition("/")[0] + f"/{lease:016x}-0"
    server.call("/v3/kv/put", {"key": _b64(key), "value": _b64("older conch"),
                               "lease": str(lease)})
    return key


def test_an_older_conchs_exclusive_hold_keeps_shared_ones_out_and_its_release_wakes_them(
    etcd_server: EtcdServer, etcd_url: str, lock_name: str
) -> None:
    with conch.connect(etcd_url) as coordinator:
        first = coordinator.lock(lock_name, shared=True)
        assert first.acquire(blocking=False)  # the queue's key prefix now exists
        older = queue_as_older_conch(etcd_server, etcd_url, lock_name)
        first.release()
        readers_wake_when_the_older_hold_goes(
            coordinator, lock_name, lambda: len(name_keys(etcd_server, etcd_url, lock_name)),
            lambda: etcd_server.call("/v3/kv/deleterange", {"key": _b64(older)}))


def test_shared_keys_are_queue_places_an_older_conch_waits_behind(
    etcd_server: EtcdServer, etcd_url: str, lock_name: str
) -> None:
    with conch.connect(etcd_url) as coordinator:
        shared = coordinator.lock(lock_name, shared=True)
        assert shared.acquire(blocking=False)
        # An older conch takes a lock only when no key at all is queued under its name,
        # else waits for the newest one queued before its own: the shared key is one.
        assert len(name_keys(etcd_server, etcd_url, lock_name)) == 1
        a_new_reader_waits_behind_an_older_writer(
            coordinator, lock_name, lambda: queue_as_older_conch(etcd_server, etcd_url, lock_name))
        shared.release()


@pytest.mark.timeout(90)
def test_a_server_restart_never_lets_a_writer_in_beside_shared_holders(lock_name: str) -> None:
    with own_server(start_etcd) as own_etcd:
        url = own_etcd.url(ttl=3)
        with conch.connect(url) as readers, conch.connect(url) as writers:
            shared = [readers.lock(lock_name, shared=True) for _ in range(2)]
            assert all(hold.acquire(blocking=False) for hold in shared)
            tokens = [hold.token or 0 for hold in shared]
            writer = Waiter(writers.lock(lock_name))
            time.sleep(0.3)
            own_etcd.restart()
            restarted = time.monotonic()
            while time.monotonic() < restarted + 5:  # across several keep-alives
                held = [hold for hold in shared if hold.held]
                assert not (held and not writer.waiting and writer.acquired), "a writer overlapped"
                time.sleep(0.01)
            for hold in shared:
                if hold.held:
                    hold.release()
            assert writer.result(15) is True
            assert writer.lock.token is not None and writer.lock.token > max(tokens)
            writer.lock.release()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
