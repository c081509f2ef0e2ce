"""The redis:// backend's native asyncio handle on a real Redis.

What the async contract suite (``tests/contract -k redis-async``) and tests/aio do
not show: blocking and asyncio holders of one name share it, waits are ``BLPOP``
on the loop (no thread, few connections), cancellation leaves nothing held,
connections are per event loop and closed, errors carry no password.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import conch
import conch.aio
from conch.aio.native import native_lock
from conch.backends.redis.steps import lock_keys
from tests.backends import test_redis
from tests.backends.async_cycle import uncontended_async_cycle
from tests.backends.test_redis_sentinel import SentinelGroup
from tests.contract import workers
from tests.servers.redis import RedisProcess, start_redis

PASSWORD = "async-secret-pw"

calls = test_redis.calls

# Holds NAME (argv[1]) with the blocking API until a line on stdin, then releases it.
_HOLD_UNTIL_TOLD = """
import sys, time, conch
with conch.connect() as coordinator:
    lock = coordinator.lock(sys.argv[1])
    lock.acquire()
    print("held", flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", time.monotonic(), flush=True)
"""


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A server of this test alone (with a password): its connections can be counted."""
    server = start_redis(password=PASSWORD)
    try:
        yield server
    finally:
        server.cleanup()


def conch_connections(server: RedisProcess) -> int:
    """The connections conch's clients have open on ``server`` (they name themselves)."""
    with server.admin() as admin:
        return sum(client["name"] == "conch" for client in admin.client_list())


def wait_for_connections(server: RedisProcess, count: int, timeout: float = 3.0) -> int:
    """The conch connection count once it is ``count`` (or after ``timeout``)."""
    end = time.monotonic() + timeout
    while (now := conch_connections(server)) != count and time.monotonic() < end:
        time.sleep(0.02)
    return now


async def close_loop_connections(coordinator: conch.Coordinator) -> None:
    """Close what this loop opened (``AsyncCoordinator.stop()`` does it; these tests use
    a blocking coordinator across loops)."""
    assert coordinator._backend is not None
    await coordinator._backend.close_async()


def holder_exists(server: RedisProcess, name: str) -> bool:
    with server.admin() as admin:
        return bool(admin.exists(lock_keys(name.encode()).holder))


def test_an_async_waiter_wakes_at_once_when_a_blocking_holder_elsewhere_releases(
    own_redis: RedisProcess, lock_name: str
) -> None:
    url = f"{own_redis.url}/0?ttl=30"  # a waiter's BLPOP bound (the TTL left) is long
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_UNTIL_TOLD, lock_name], cwd=workers.REPOSITORY,
        env={**os.environ, "CONCH_URL": url},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        workers.expect(holder, "held")

        async def main() -> tuple[float, float, int, int]:
            async with await conch.aio.connect(url) as coordinator:
                lock = coordinator.lock(lock_name)
                waiter = asyncio.ensure_future(lock.acquire())
                await asyncio.sleep(0.5)
                own_redis.admin().config_resetstat()
                await asyncio.sleep(1.0)
                attempts, pops = calls(own_redis, "evalsha"), calls(own_redis, "blpop")
                assert holder.stdin is not None
                holder.stdin.write("release\n")
                holder.stdin.flush()
                assert await asyncio.wait_for(waiter, 10)
                acquired = time.monotonic()
                await lock.release()
            released = float(workers.expect(holder, "released"))
            return acquired, released, attempts, pops

        acquired, released, attempts, pops = asyncio.run(main())
        workers.finish(holder)
    finally:
        holder.kill()
        holder.communicate()
    print(f"\nasync waiter woken {(acquired - released) * 1000:.1f} ms after a blocking "
          f"release in another process; 1 s of waiting cost {attempts} attempts, {pops} BLPOP")
    assert attempts == 0 and pops <= 1, "the waiter polled"
    assert acquired - released < 1.0


def test_a_killed_holder_process_is_taken_over_by_an_async_waiter_after_the_ttl(
    own_redis: RedisProcess, lock_name: str
) -> None:
    url = f"{own_redis.url}/0?ttl=2"
    holder = workers.spawn(url, "hold", lock_name)
    try:
        dead_token = int(workers.expect(holder, "held "))

        async def main() -> float:
            async with await conch.aio.connect(url) as coordinator:
                lock = coordinator.lock(lock_name)
                assert await lock.acquire(blocking=False) is False
                holder.send_signal(signal.SIGKILL)
                holder.wait()
                killed = time.monotonic()
                assert await lock.acquire(blocking=10)
                took = time.monotonic() - killed
                assert lock.token is not None and lock.token > dead_token
                await lock.release()
                return took

        took = asyncio.run(main())
    finally:
        holder.kill()
        holder.communicate()
    print(f"\nkilled holder's lock taken over by an async waiter {took:.2f} s after SIGKILL")
    assert took < 2 + 1.0


@pytest.mark.parametrize("connection", ["new", "reused"])
def test_an_acquire_cancelled_at_any_await_point_leaves_the_lock_free(
    own_redis: RedisProcess, lock_name: str, connection: str
) -> None:
    # Cancel the handle's acquire after 0, 1, 2... loop turns, until it completes first;
    # with a "new" connection each attempt runs on a fresh loop, so it connects first.
    url = f"{own_redis.url}/0?ttl=30"
    with conch.connect(url) as coordinator:

        async def attempt(turns: int) -> bool:
            lock = native_lock(coordinator, lock_name)
            if connection == "reused":
                assert await lock.acquire(blocking=False)
                await lock.release()
            task = asyncio.ensure_future(lock.acquire(blocking=False))
            for _ in range(turns):
                await asyncio.sleep(0)
            if task.done():
                assert task.result() is True
                await lock.release()
            else:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert not holder_exists(own_redis, lock_name), f"held after {turns} turns"
            await close_loop_connections(coordinator)
            return task.cancelled()

        turns = 0
        while asyncio.run(attempt(turns)):
            turns += 1
        assert turns >= 2, "the acquire never awaited"
    print(f"\n{connection} connection: cancelled after 0..{turns - 1} loop turns")


def test_an_acquire_cancelled_as_its_script_reply_arrives_frees_the_lock(
    own_redis: RedisProcess, lock_name: str
) -> None:
    url = f"{own_redis.url}/0?ttl=30"
    caught = 0
    with conch.connect(url) as coordinator:

        async def attempt() -> bool:
            lock = native_lock(coordinator, lock_name)
            task = asyncio.ensure_future(lock.acquire(blocking=False))
            # The blocking check stalls the loop: once the script has run, its reply
            # waits in the socket and the task is cancelled before it reads it.
            while not holder_exists(own_redis, lock_name):
                await asyncio.sleep(0)
            if task.done():
                await lock.release()
                return False
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not holder_exists(own_redis, lock_name), "the cancelled acquire kept it"
            return True

        async def main() -> int:
            caught = sum([await attempt() for _ in range(20)])
            await close_loop_connections(coordinator)
            return caught

        caught = asyncio.run(main())
    print(f"\n{caught} of 20 acquires cancelled with their hold already taken")
    assert caught >= 1


def test_a_wait_cancelled_in_blpop_holds_nothing_and_passes_the_wake_up_on(
    own_redis: RedisProcess, lock_name: str
) -> None:
    url = f"{own_redis.url}/0?ttl=30"
    keys = lock_keys(lock_name.encode())
    with conch.connect(url) as coordinator, conch.connect(url) as other:
        holder = other.lock(lock_name)
        holder.acquire()
        holder_value = own_redis.admin().get(keys.holder)

        async def main() -> None:
            lock = native_lock(coordinator, lock_name)
            task = asyncio.ensure_future(lock.acquire(blocking=True))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await close_loop_connections(coordinator)

        asyncio.run(main())
        with own_redis.admin() as admin:
            assert admin.get(keys.holder) == holder_value
            # It may have taken a release's signal as it was cancelled: it leaves one.
            assert admin.lrange(keys.wake, 0, -1) == [b"1"]
            assert 0 < admin.pttl(keys.wake) <= 2000
        holder.release()


def test_a_hundred_async_waiters_add_no_thread_and_hardly_any_connection(
    own_redis: RedisProcess, lock_name: str
) -> None:
    url = f"{own_redis.url}/0?ttl=30"
    entered: list[int] = []

    async def take(lock: conch.aio.AsyncLock, index: int) -> None:
        async with lock:
            entered.append(index)

    async def main() -> tuple[int, int]:
        async with await conch.aio.connect(url) as coordinator, \
                await conch.aio.connect(url) as other:
            holder = other.lock(lock_name)
            assert await holder.acquire()
            threads, connections = threading.active_count(), conch_connections(own_redis)
            tasks = [asyncio.ensure_future(take(coordinator.lock(lock_name), index))
                     for index in range(100)]
            await asyncio.sleep(1.0)
            added_threads = threading.active_count() - threads
            added_connections = conch_connections(own_redis) - connections
            assert not any(task.done() for task in tasks)
            await holder.release()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            return added_threads, added_connections

    added_threads, added_connections = asyncio.run(main())
    print(f"\n100 async waiters: {added_threads} threads, {added_connections} connections")
    assert added_threads == 0
    assert added_connections <= 2
    assert sorted(entered) == list(range(100))


def test_renewal_keeps_an_async_hold_past_several_ttls(
    own_redis: RedisProcess, lock_name: str
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(f"{own_redis.url}/0?ttl=1") as coordinator:
            lock = coordinator.lock(lock_name)
            assert await lock.acquire()
            await asyncio.sleep(3.5)
            assert lock.held and not lock.lost.is_set()
            with own_redis.admin() as admin:
                assert admin.pttl(lock_keys(lock_name.encode()).holder) > 0
            await lock.release()

    asyncio.run(main())
    assert not holder_exists(own_redis, lock_name)


def test_a_deleted_key_under_an_async_holder_is_reported_lost(
    own_redis: RedisProcess, lock_name: str
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(f"{own_redis.url}/0?ttl=1.5") as coordinator:
            lock = coordinator.lock(lock_name)
            assert await lock.acquire()
            with own_redis.admin() as admin:
                admin.delete(lock_keys(lock_name.encode()).holder)
            await asyncio.wait_for(lock.lost.wait(), 1.5 / 3 + 3.0)
            assert not lock.held
            with pytest.raises(conch.LockLost):
                await lock.release()

    asyncio.run(main())


def test_stopping_closes_every_connection_the_loop_opened(
    own_redis: RedisProcess, lock_name: str
) -> None:
    url = f"{own_redis.url}/0?ttl=30"
    baseline = conch_connections(own_redis)

    async def main() -> int:
        async with await conch.aio.connect(url) as coordinator, \
                await conch.aio.connect(url) as other:
            holder = other.lock(lock_name)
            assert await holder.acquire()
            waiter = asyncio.ensure_future(coordinator.lock(lock_name).acquire())
            await asyncio.sleep(0.3)  # one connection in BLPOP, one idle
            opened = conch_connections(own_redis)
            await coordinator.stop()
            with pytest.raises(conch.NotStarted):
                await waiter
        return opened

    opened = asyncio.run(main())
    assert opened >= baseline + 3
    assert wait_for_connections(own_redis, baseline) == baseline


def test_one_coordinator_serves_successive_event_loops(
    own_redis: RedisProcess, lock_name: str
) -> None:
    url = f"{own_redis.url}/0?ttl=30"
    tokens: list[int] = []
    with conch.connect(url) as coordinator:

        async def main() -> None:
            lock = conch.aio.AsyncCoordinator.sharing(coordinator).lock(lock_name)
            for _ in range(3):
                async with lock:
                    assert lock.token is not None
                    tokens.append(lock.token)

        for _ in range(4):
            asyncio.run(main())
            with coordinator.lock(lock_name) as blocking:  # the blocking API still works
                assert blocking.token is not None
                tokens.append(blocking.token)
        gc.collect()  # the connections of the closed loops, left to the collector
        # The blocking pool's connection and the last loop's at most.
        assert wait_for_connections(own_redis, 2) <= 2
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens) == 16


@pytest.mark.parametrize("failure", ["paused", "stopped", "password changed"])
def test_async_errors_never_show_the_password(
    own_redis: RedisProcess, lock_name: str, failure: str
) -> None:
    url = f"{own_redis.url}/0?ttl=30&socket_timeout=0.5&connect_timeout=0.5"
    with conch.connect(url) as coordinator:
        shared = conch.aio.AsyncCoordinator.sharing(coordinator)
        if failure == "paused":
            own_redis.pause()
        elif failure == "stopped":
            own_redis.stop()
        else:
            with own_redis.admin() as admin:
                admin.config_set("requirepass", "another-pw")

        async def main() -> BaseException:
            with pytest.raises(conch.BackendUnavailable) as raised:
                await shared.lock(lock_name).acquire(blocking=False)
            return raised.value

        try:
            error = asyncio.run(main())
        finally:
            if failure == "paused":
                own_redis.resume()
    text = f"{error} {error!r} {error.__cause__!r} {error.__context__!r}"
    print(f"\n{failure}: {error}")
    assert PASSWORD not in text and "another-pw" not in text
    assert "redis at 127.0.0.1:" in str(error)


def test_rediss_async_locks_over_tls(redis_tls_url: str, lock_name: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(redis_tls_url) as coordinator, \
                coordinator.lock(lock_name) as lock:
            holder = coordinator.coordinator.describe(lock_name).holder
            assert holder is not None and holder.token == lock.token

    asyncio.run(main())


def test_async_locks_follow_the_master_through_sentinel_with_wait_replicas(
    lock_name: str
) -> None:
    group = SentinelGroup()
    try:
        async def lock_once(coordinator: conch.aio.AsyncCoordinator) -> int:
            async with coordinator.lock(lock_name) as lock:
                assert lock.token is not None
                return lock.token

        async def main() -> tuple[int, int]:
            async with await conch.aio.connect(group.url("wait_replicas=1")) as coordinator:
                before = await lock_once(coordinator)
                with group.master.admin() as master:
                    assert master.get(lock_keys(lock_name.encode()).counter) is not None
                await asyncio.get_running_loop().run_in_executor(None, group.fail_over)
            # No replica is left to acknowledge: a coordinator without wait_replicas.
            async with await conch.aio.connect(group.url()) as coordinator:
                return before, await lock_once(coordinator)

        before, after = asyncio.run(main())
    finally:
        group.cleanup()
    assert after > before


def test_uncontended_async_cycle_time(own_redis: RedisProcess, lock_name: str) -> None:
    cycle = uncontended_async_cycle(f"{own_redis.url}/0", lock_name)
    print(f"\nuncontended `async with lock: pass`: {cycle * 1e6:.0f} µs")
    assert cycle < 0.01
