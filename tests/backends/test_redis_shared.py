"""Shared locks and semaphores on a real Redis: a server restart, a fleet still running the
exclusive-only conch, wake-ups by the server rather than polling, keys apart, TLS.

The contract (tests/contract/test_shared_locks.py, test_semaphores.py) checks what every
backend shares; these check how redis:// keeps it. Timings are printed (``pytest -s``).
"""

from __future__ import annotations

import threading
import time

import pytest

import conch
from conch.backends.redis.lock import RedisLock
from conch.backends.redis.share_scripts import permit_keys, shared_keys
from conch.backends.redis.steps import lock_keys
from conch.introspection import HolderStamp
from tests.backends import shared_faults
from tests.backends.test_redis import backend_of, calls, own_redis  # noqa: F401 - fixture
from tests.servers.redis import RedisProcess


def old_exclusive(coordinator: conch.Coordinator, name: str) -> RedisLock:
    """The exclusive handle of a conch without shared locks: the same keys and scripts,
    never waiting as a writer."""
    backend = backend_of(coordinator)
    return RedisLock(backend.session, lock_keys(name.encode()),
                     HolderStamp(name.encode(), "old conch"), lambda reason: None)


def scripts_and_waits_in(server: RedisProcess, seconds: float) -> tuple[int, int]:
    """The scripts and ``BLPOP`` the server ran in ``seconds`` from 0.3 s from now."""
    time.sleep(0.3)
    server.admin().config_resetstat()
    time.sleep(seconds)
    return calls(server, "evalsha"), calls(server, "blpop")


def test_a_server_restart_loses_shared_holds_and_permits_and_tokens_keep_increasing(
    own_redis: RedisProcess, lock_name: str  # noqa: F811
) -> None:
    shared_faults.restart_loses_shared_holds_and_permits(
        f"{own_redis.url}/0?ttl=1.5", own_redis, lock_name)


def test_an_old_exclusive_holder_and_new_shared_holds_exclude_each_other(
    redis_url: str, lock_name: str
) -> None:
    shared_faults.old_exclusive_and_new_shared_exclude_each_other(redis_url, lock_name,
                                                                  old_exclusive)


def test_a_shared_waiter_blocks_on_the_server_and_all_wake_on_one_release(
    own_redis: RedisProcess, lock_name: str  # noqa: F811
) -> None:
    url = f"{own_redis.url}/0?ttl=30"  # no renewal falls in the counted window
    with conch.connect(url) as coordinator:
        exclusive = coordinator.lock(lock_name)
        exclusive.acquire()
        readers = [coordinator.lock(lock_name, shared=True) for _ in range(3)]
        returned: list[float] = []
        threads = [threading.Thread(target=lambda reader=reader: returned.append(
            time.monotonic() if reader.acquire(blocking=10) else float("inf")))
            for reader in readers]
        for thread in threads:
            thread.start()
        attempts, pops = scripts_and_waits_in(own_redis, 1.5)
        released = time.monotonic()
        exclusive.release()
        for thread in threads:
            thread.join(10)
        for reader in readers:
            reader.release()
    handoff = max(returned) - released
    print(f"\n3 shared waiters: {attempts} attempts, {pops} BLPOP in 1.5 s; all in "
          f"{handoff * 1000:.1f} ms after the release")
    assert attempts == 0 and pops <= 3
    assert handoff < 1.0, "one release must wake every shared waiter (passed on)"


def test_a_writer_that_gives_up_lets_the_shared_waiters_it_held_back_in_at_once(
    redis_url: str, lock_name: str
) -> None:
    shared_faults.shared_holds_wait_for_a_writer_until_it_gives_up(redis_url, lock_name)


def test_a_semaphore_waiter_blocks_on_the_server_and_wakes_on_release(
    own_redis: RedisProcess, lock_name: str  # noqa: F811
) -> None:
    url = f"{own_redis.url}/0?ttl=30"
    with conch.connect(url) as coordinator:
        held, waiting = coordinator.semaphore(lock_name, 1), coordinator.semaphore(lock_name, 1)
        assert held.acquire()
        own_redis.admin().config_resetstat()
        handoff = shared_faults.returned_after_release(
            lambda: waiting.acquire(blocking=10), held.release)
        attempts = calls(own_redis, "evalsha")
        waiting.release()
    print(f"\nsemaphore hand-off {handoff * 1000:.1f} ms, {attempts} scripts run")
    assert handoff < 1.0
    assert attempts <= 4, "the waiter polled"


def test_semaphore_keys_are_apart_from_the_locks_and_expire_with_their_holders(
    redis_server: RedisProcess, redis_url: str, lock_name: str
) -> None:
    admin = redis_server.admin()
    with conch.connect(redis_url) as coordinator:
        lock, permit = coordinator.lock(lock_name), coordinator.semaphore(lock_name, 1)
        assert lock.acquire(blocking=False) and permit.acquire(blocking=False)
        keys = permit_keys(lock_name.encode())
        assert admin.get(keys.limit) == b"1"
        assert admin.pttl(keys.permits) > 0 and admin.pttl(keys.limit) > 0
        assert not set(lock_keys(lock_name.encode())) & set(keys)
        permit.release()
        assert not admin.exists(keys.permits, keys.limit)
        shared = coordinator.lock(lock_name + "-shared", shared=True)
        assert shared.acquire()
        shared_side = shared_keys(lock_keys((lock_name + "-shared").encode()))
        assert admin.pttl(shared_side.lock.holder) > 0 and admin.pttl(shared_side.readers) > 0
        shared.release()
        assert not admin.exists(shared_side.lock.holder, shared_side.readers)
        lock.release()


def test_a_broken_shared_lock_tells_its_holders(
    redis_url: str, lock_name: str
) -> None:
    with conch.connect(redis_url) as coordinator:
        first = coordinator.lock(lock_name, shared=True)
        second = coordinator.lock(lock_name, shared=True)
        assert first.acquire() and second.acquire()
        coordinator.break_lock(lock_name)
        assert first.lost.wait(5) and second.lost.wait(5), "the next renewal did not notice"
        with pytest.raises(conch.LockLost):
            first.release()


def test_green_shared_and_permit_waiters_never_stop_the_hub(
    redis_url: str, lock_name: str
) -> None:
    shared_faults.green_waits_never_stop_the_hub(redis_url, lock_name)


def test_shared_locks_and_semaphores_over_tls(redis_tls_url: str, lock_name: str) -> None:
    shared_faults.shared_and_semaphore_hold(redis_tls_url, lock_name)
