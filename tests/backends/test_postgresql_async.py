"""postgresql:// through native asyncio: waits in the server, cancellation, sessions per loop.

Runs against the real PostgreSQL of ``tests/servers/postgresql.py``, with sync holders
in this process or in another one. Bounds stay loose for a loaded machine.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import conch
import conch.aio
from conch.backends.base import Deadline
from conch.backends.kit.naming import int64_key as advisory_key
from conch.backends.postgresql.backend import PostgreSQLBackend
from tests.backends.async_cycle import uncontended_async_cycle
from tests.contract import workers
from tests.contract.waiting import HANDOFF_WITH_NOTIFY
from tests.servers.postgresql import PostgreSQLServer

# Holds NAME (argv[1]) through the sync API, releases it after a line on stdin.
HOLDER = """
import sys, conch
with conch.connect() as coordinator:
    lock = coordinator.lock(sys.argv[1])
    lock.acquire()
    print("held", lock.token, flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def server(postgresql_server: PostgreSQLServer, postgresql_url: str) -> PostgreSQLServer:
    """The server, running (``postgresql_url`` restarts it if an earlier test stopped it)."""
    return postgresql_server


@pytest.fixture
def holder(server: PostgreSQLServer, lock_name: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``lock_name`` through the sync API."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, lock_name], cwd=workers.REPOSITORY,
        env={"CONCH_URL": server.url, "PATH": "/usr/bin:/bin"},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers.expect(process, "held ")
        yield process
    finally:
        process.kill()
        process.communicate()


def lock_rows(server: PostgreSQLServer, name: str) -> list[tuple[object, ...]]:
    """(pid, granted) of every session holding or awaiting ``name``."""
    key = advisory_key(name.encode())
    return server.execute(
        "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
        " AND classid = %s::oid AND objid = %s::oid",
        (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)


def sessions_of(server: PostgreSQLServer, member_id: str) -> list[tuple[object, ...]]:
    """(pid, wait_event_type) of every connection of member ``member_id``."""
    return server.execute("SELECT pid, wait_event_type FROM pg_stat_activity"
                          " WHERE application_name = %s", f"conch {member_id}"[:63])


def eventually(check: object, timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true (fails after ``timeout``)."""
    end = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, f"{check} still false after {timeout} s"
        time.sleep(0.02)


def backend_of(coordinator: conch.aio.AsyncCoordinator) -> PostgreSQLBackend:
    backend = coordinator.coordinator._backend
    assert isinstance(backend, PostgreSQLBackend)
    return backend


@pytest.mark.parametrize("how", ["release", "kill"])
def test_a_waiter_wakes_when_a_holder_process_releases_or_dies(
    server: PostgreSQLServer, holder: subprocess.Popen[str], lock_name: str, how: str
) -> None:
    async def main() -> float:
        async with await conch.aio.connect(server.url) as coordinator:
            lock = coordinator.lock(lock_name)
            waiting = asyncio.ensure_future(lock.acquire())
            await asyncio.sleep(0.3)
            assert not waiting.done()
            assert holder.stdin is not None
            freed = time.monotonic()
            if how == "release":
                holder.stdin.write("\n")
                holder.stdin.flush()
            else:
                holder.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(waiting, 10)
            took = time.monotonic() - freed
            await lock.release()
            return took

    took = asyncio.run(main())
    print(f"woken {took * 1000:.1f} ms after the holder's {how}")
    assert took < HANDOFF_WITH_NOTIFY


@pytest.mark.parametrize("delay", [None, 0.0, 0.0005, 0.002])
def test_a_cancelled_acquire_leaves_the_lock_free_and_its_connection_unused(
    server: PostgreSQLServer, lock_name: str, delay: float | None
) -> None:
    """``None``: cancelled during the server-side wait; else that long after the holder's
    release, as the grant arrives."""
    with conch.connect(server.url) as sync:
        holder = sync.lock(lock_name)
        assert holder.acquire()

        async def main() -> None:
            async with await conch.aio.connect(server.url) as coordinator:
                backend = backend_of(coordinator)
                handle = backend.async_handle(lock_name.encode(), lambda reason: None)
                acquiring = asyncio.ensure_future(handle.acquire(Deadline(None)))
                await asyncio.sleep(0.3)
                [waiter] = [pid for pid, granted in lock_rows(server, lock_name) if not granted]
                if delay is not None:
                    holder.release()
                    time.sleep(delay)  # the grant is on its way; the loop has not seen it
                acquiring.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await acquiring
                # Its connection is gone, so no later acquire can be handed it.
                await asyncio.to_thread(eventually, lambda: not any(
                    pid == waiter for pid, _ in sessions_of(server, coordinator.member_id)))
                assert waiter not in [pid for pid, _ in lock_rows(server, lock_name)]
                again = coordinator.lock(lock_name)
                if delay is None:
                    assert await again.acquire(blocking=False) is False
                    holder.release()
                assert await again.acquire(blocking=5)
                await again.release()

        asyncio.run(main())
        probe = sync.lock(lock_name)
        assert probe.acquire(blocking=False), "the cancelled acquire kept the lock"
        probe.release()


def test_a_hundred_waiters_use_one_waiting_connection_and_no_thread(
    server: PostgreSQLServer, lock_name: str
) -> None:
    async def main() -> None:
        async with await conch.aio.connect(server.url) as coordinator:
            with conch.connect(server.url) as sync:
                holder = sync.lock(lock_name)
                assert holder.acquire()
                threads = threading.active_count()
                locks = [coordinator.lock(lock_name) for _ in range(100)]
                tasks = [asyncio.ensure_future(lock.acquire()) for lock in locks]
                await asyncio.sleep(0.5)
                assert threading.active_count() == threads, "a thread was added"
                waits = [event for _, event in sessions_of(server, coordinator.member_id)
                         if event == "Lock"]
                assert waits == ["Lock"], f"{len(waits)} connections wait"
                assert not any(task.done() for task in tasks)
                holder.release()
            for lock, task in zip(locks, tasks, strict=True):
                await asyncio.wait_for(task, 30)
                await lock.release()

    asyncio.run(main())


def test_a_timed_wait_returns_false_near_its_deadline(
    server: PostgreSQLServer, lock_name: str
) -> None:
    async def main() -> float:
        async with await conch.aio.connect(server.url) as coordinator:
            holder = coordinator.lock(lock_name)
            assert await holder.acquire()
            started = time.monotonic()
            assert await coordinator.lock(lock_name).acquire(blocking=0.5) is False
            took = time.monotonic() - started
            await holder.release()
            return took

    took = asyncio.run(main())
    assert 0.45 <= took < 2.0


def test_tokens_increase_across_sync_and_async_holders(
    server: PostgreSQLServer, lock_name: str
) -> None:
    tokens: list[int] = []

    async def main(sync: conch.Coordinator) -> None:
        async with await conch.aio.connect(server.url) as coordinator:
            for _ in range(5):
                async with coordinator.lock(lock_name) as lock:
                    assert lock.token is not None
                    tokens.append(lock.token)
                with sync.lock(lock_name) as held:
                    assert held.token is not None
                    tokens.append(held.token)

    with conch.connect(server.url) as sync:
        asyncio.run(main(sync))
    assert tokens == sorted(set(tokens)), tokens


def test_stop_leaves_no_connection_of_the_member(server: PostgreSQLServer, lock_name: str) -> None:
    async def main() -> str:
        coordinator = await conch.aio.connect(server.url)
        held = coordinator.lock(lock_name)
        assert await held.acquire()
        other = coordinator.lock(f"{lock_name}-other")
        assert await other.acquire()
        await other.release()  # an idle pooled session
        waiting = asyncio.ensure_future(coordinator.lock(lock_name).acquire())
        await asyncio.sleep(0.3)
        await coordinator.stop()
        with pytest.raises(conch.NotStarted):
            await waiting
        assert held.lost.is_set()
        return coordinator.member_id

    member = asyncio.run(main())
    eventually(lambda: not sessions_of(server, member))
    assert not lock_rows(server, lock_name)


def test_one_coordinator_serves_successive_event_loops(
    server: PostgreSQLServer, lock_name: str
) -> None:
    coordinator = conch.aio.AsyncCoordinator(server.url)

    async def use() -> None:
        async with coordinator.lock(lock_name) as lock:
            assert lock.held

    asyncio.run(coordinator.start())
    for _ in range(3):
        asyncio.run(use())
    asyncio.run(coordinator.stop())
    eventually(lambda: not sessions_of(server, coordinator.member_id))


def test_a_terminated_holder_session_is_reported_lost(
    server: PostgreSQLServer, lock_name: str
) -> None:
    async def main() -> None:
        url = server.url_with(query="heartbeat=0.5")
        async with await conch.aio.connect(url) as coordinator:
            lock = coordinator.lock(lock_name)
            assert await lock.acquire()
            [(pid, _)] = lock_rows(server, lock_name)
            server.execute("SELECT pg_terminate_backend(%s)", pid)
            await asyncio.wait_for(lock.lost.wait(), 5)
            assert not lock.held
            with pytest.raises(conch.LockLost):
                await lock.release()
            assert await lock.acquire(blocking=False), "the pool handed out a dead session"
            await lock.release()

    asyncio.run(main())


def test_the_uncontended_cycle_is_cheap(server: PostgreSQLServer, lock_name: str) -> None:
    each = uncontended_async_cycle(server.url, lock_name)
    print(f"uncontended async with lock: pass: {each * 1e6:.0f} µs")
    assert each < 0.005
