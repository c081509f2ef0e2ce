"""Shared locks and semaphores on a real memcached: what the holder key holds while shared,
a fleet still running the exclusive-only conch, a member key lost, a writer that gives up,
a server restart, keys apart, TLS.

The contract (tests/contract/test_shared_locks.py, test_semaphores.py) checks what every
backend shares; these check how memcached:// keeps it. Timings are printed (``pytest -s``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client  # type: ignore[import-untyped]

import conch
from conch.backends.memcached.client import Sharing, lock_keys, member_key
from conch.backends.memcached.lock import MemcachedLock
from tests.backends import shared_faults
from tests.backends.test_memcached import backend_of, own_memcached  # noqa: F401 - fixture
from tests.servers.memcached import MemcachedProcess


@pytest.fixture
def keys_of(memcached_server: MemcachedProcess) -> Iterator[Client]:
    """A plain client of the shared server, to read and change keys behind conch's back."""
    client = Client(("127.0.0.1", memcached_server.port), default_noreply=False)
    try:
        yield client
    finally:
        client.close()


def old_exclusive(coordinator: conch.Coordinator, name: str) -> MemcachedLock:
    """The exclusive handle of a conch without shared locks: ``add`` only, never listed."""
    return MemcachedLock(backend_of(coordinator).session, name.encode(), "old conch",
                         lambda reason: None)


def test_the_holder_key_lists_the_shared_holders_and_the_last_release_deletes_it(
    memcached_url: str, keys_of: Client, lock_name: str
) -> None:
    holder = lock_keys(lock_name.encode()).holder
    with conch.connect(memcached_url) as coordinator:
        first, second = (coordinator.lock(lock_name, shared=True) for _ in range(2))
        assert first.acquire(blocking=False) and second.acquire(blocking=False)
        sharing = Sharing.read(keys_of.get(holder))
        assert sharing is not None and len(sharing.readers) == 2 and not sharing.writers
        assert all(keys_of.get(member_key(holder, reader)) for reader in sharing.readers)
        assert (first.token or 0) < (second.token or 0)
        first.release()
        sharing = Sharing.read(keys_of.get(holder))
        assert sharing is not None and len(sharing.readers) == 1
        second.release()
        assert keys_of.get(holder) is None


def test_an_old_exclusive_holder_and_new_shared_holds_exclude_each_other(
    memcached_url: str, lock_name: str
) -> None:
    shared_faults.old_exclusive_and_new_shared_exclude_each_other(memcached_url, lock_name,
                                                                  old_exclusive)


def test_a_shared_holder_whose_key_was_lost_is_told_and_lets_a_writer_in(
    memcached_url: str, keys_of: Client, lock_name: str
) -> None:
    holder = lock_keys(lock_name.encode()).holder
    with conch.connect(memcached_url) as coordinator:
        shared, exclusive = coordinator.lock(lock_name, shared=True), coordinator.lock(lock_name)
        assert shared.acquire()
        sharing = Sharing.read(keys_of.get(holder))
        assert sharing is not None
        keys_of.delete(member_key(holder, sharing.readers[0]))
        assert exclusive.acquire(blocking=False), "a dead reader was counted"
        assert shared.lost.wait(5), "the next renewal did not notice"
        with pytest.raises(conch.LockLost):
            shared.release()
        exclusive.release()


def test_a_writer_that_gives_up_lets_the_shared_holds_it_held_back_in(
    memcached_url: str, keys_of: Client, lock_name: str
) -> None:
    holder = lock_keys(lock_name.encode()).holder
    waiting = threading.Thread(
        target=shared_faults.shared_holds_wait_for_a_writer_until_it_gives_up,
        args=(memcached_url, lock_name))
    waiting.start()
    time.sleep(0.5)  # the writer waits
    sharing = Sharing.read(keys_of.get(holder))
    assert sharing is not None and len(sharing.writers) == 1, "the writer is not listed"
    waiting.join()


def test_a_server_restart_loses_shared_holds_and_permits_and_tokens_keep_increasing(
    own_memcached: MemcachedProcess, lock_name: str  # noqa: F811
) -> None:
    shared_faults.restart_loses_shared_holds_and_permits(
        f"{own_memcached.url}?ttl=2", own_memcached, lock_name)


def test_semaphore_keys_are_apart_and_a_lost_permit_frees_its_place(
    memcached_url: str, keys_of: Client, lock_name: str
) -> None:
    keys = lock_keys(lock_name.encode(), b"semaphore:")
    assert keys.holder.startswith(b"conch:semaphore:")
    assert keys.holder != lock_keys(lock_name.encode()).holder
    with conch.connect(memcached_url) as coordinator:
        lock, permit = coordinator.lock(lock_name), coordinator.semaphore(lock_name, 1)
        assert lock.acquire(blocking=False) and permit.acquire(blocking=False)
        roster = keys_of.get(keys.holder)
        assert roster is not None and b'"limit": 1' in roster
        holder_id = roster.split(b'"holders": ["')[1].split(b'"')[0].decode()
        keys_of.delete(keys.holder + b":" + holder_id.encode())
        other = coordinator.semaphore(lock_name, 2)
        assert other.acquire(blocking=False), "a lost permit still counted (or its limit)"
        assert permit.lost.wait(5)
        with pytest.raises(conch.LockLost):
            permit.release()
        other.release()
        lock.release()


def test_green_shared_and_permit_waiters_never_stop_the_hub(
    memcached_url: str, lock_name: str
) -> None:
    shared_faults.green_waits_never_stop_the_hub(memcached_url, lock_name)


def test_shared_locks_and_semaphores_over_tls(memcached_tls_url: str, lock_name: str) -> None:
    shared_faults.shared_and_semaphore_hold(memcached_tls_url, lock_name)
