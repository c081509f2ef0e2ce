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
from conch.backends.base import Deadline
from conch.backends.memcached.client import lock_keys
from conch.backends.memcached.lock import MemcachedLock
from conch.backends.memcached.semaphore import semaphore_keys
from conch.backends.memcached.shared import Sharing, member_key
from conch.introspection import HolderStamp
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
    return MemcachedLock(backend_of(coordinator).session, lock_keys(name.encode()),
                         HolderStamp(name.encode(), "old conch"), lambda reason: None)


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
    with conch.connect(memcached_url) as old, conch.connect(memcached_url) as new:
        exclusive = old_exclusive(old, lock_name)
        assert exclusive.acquire(Deadline(0)) is not None
        shared = new.lock(lock_name, shared=True)
        assert shared.acquire(blocking=0.2) is False
        exclusive.release()
        assert shared.acquire(blocking=False)
        assert exclusive.acquire(Deadline(0.2)) is None, "an old exclusive hold joined readers"
        got: list[int | None] = []
        waiting = threading.Thread(target=lambda: got.append(exclusive.acquire(Deadline(5))))
        waiting.start()
        time.sleep(0.2)
        released = time.monotonic()
        shared.release()
        waiting.join()
        print(f"\nnew shared release -> old exclusive holder: "
              f"{(time.monotonic() - released) * 1000:.1f} ms")
        assert got and got[0] is not None
        exclusive.release()


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
    with conch.connect(memcached_url) as coordinator:
        first = coordinator.lock(lock_name, shared=True)
        assert first.acquire()
        writer = threading.Thread(target=lambda: coordinator.lock(lock_name).acquire(1.0))
        writer.start()
        time.sleep(0.3)
        sharing = Sharing.read(keys_of.get(holder))
        assert sharing is not None and len(sharing.writers) == 1, "the writer is not listed"
        late = coordinator.lock(lock_name, shared=True)
        started = time.monotonic()
        assert late.acquire(blocking=5), "held back past the writer's timeout"
        took = time.monotonic() - started
        writer.join()
        print(f"\nshared hold let in {took:.2f} s into a writer's 0.7 s wait left")
        assert 0.4 < took < 1.5
        late.release()
        first.release()


def test_a_server_restart_loses_shared_holds_and_permits_and_tokens_keep_increasing(
    own_memcached: MemcachedProcess, lock_name: str  # noqa: F811
) -> None:
    url = f"{own_memcached.url}?ttl=2"
    with conch.connect(url) as holder, conch.connect(url) as other:
        shared, permit = holder.lock(lock_name, shared=True), holder.semaphore(lock_name, 2)
        assert shared.acquire() and permit.acquire()
        first = (shared.token or 0, permit.token or 0)
        own_memcached.restart()  # memcached keeps nothing; the grace period is waited out
        assert shared.lost.wait(5) and permit.lost.wait(5), "the holders were never told"
        exclusive, again = other.lock(lock_name), other.semaphore(lock_name, 3)
        assert exclusive.acquire(blocking=5) and again.acquire(blocking=5)
        assert (exclusive.token or 0) > first[0] and (again.token or 0) > first[1]
        exclusive.release()
        again.release()
        for lost in (shared, permit):
            with pytest.raises(conch.LockLost):
                lost.release()


def test_semaphore_keys_are_apart_and_a_lost_permit_frees_its_place(
    memcached_url: str, keys_of: Client, lock_name: str
) -> None:
    keys = semaphore_keys(lock_name.encode())
    assert keys.roster.startswith(b"conch:semaphore:")
    assert keys.roster != lock_keys(lock_name.encode()).holder
    with conch.connect(memcached_url) as coordinator:
        lock, permit = coordinator.lock(lock_name), coordinator.semaphore(lock_name, 1)
        assert lock.acquire(blocking=False) and permit.acquire(blocking=False)
        roster = keys_of.get(keys.roster)
        assert roster is not None and b'"limit": 1' in roster
        holder_id = roster.split(b'"holders": ["')[1].split(b'"')[0].decode()
        keys_of.delete(keys.roster + b":" + holder_id.encode())
        other = coordinator.semaphore(lock_name, 2)
        assert other.acquire(blocking=False), "a lost permit still counted (or its limit)"
        assert permit.lost.wait(5)
        with pytest.raises(conch.LockLost):
            permit.release()
        other.release()
        lock.release()


def test_shared_locks_and_semaphores_over_tls(memcached_tls_url: str, lock_name: str) -> None:
    with conch.connect(memcached_tls_url) as coordinator:
        with coordinator.lock(lock_name, shared=True) as shared:
            assert shared.token is not None
        with coordinator.semaphore(lock_name, 2) as permit:
            assert permit.token is not None
