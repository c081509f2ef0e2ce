"""``file://`` through asyncio: waits on inotify through the event loop, with no thread."""

from __future__ import annotations

import asyncio
import os
import pathlib
import statistics
import threading
import time

import pytest

import conch
import conch.aio
from conch.backends.base import AsyncLockHandle, Deadline
from conch.backends.file import inotify as file_inotify
from conch.backends.file.backend import FileBackend
from tests.backends import file_helpers
from tests.backends.file_helpers import HOLDER, lock_file_name
from tests.contract import workers
from tests.contract.waiting import HANDOFF_WITH_NOTIFY

NAME = "vnf-42"


@pytest.fixture
def directory(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "locks"


@pytest.fixture
def url(directory: pathlib.Path) -> str:
    return f"file://{directory}"


def _descriptors() -> dict[int, str]:
    """This process's open descriptors in use and what each refers to (the idle inotify
    instances kept for the next waits do not count, nor the one watching lock
    directories for removals)."""
    idle = {instance.fd for instance in file_inotify.idle}
    if file_inotify._directories is not None:
        idle.add(file_inotify._directories.inotify.fd)
    found = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            if int(entry) not in idle:
                found[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue  # the descriptor listdir itself used
    return found


def _inotify_descriptors() -> set[int]:
    return {fd for fd, target in _descriptors().items() if target == "anon_inode:inotify"}


def _async_handle(coordinator: conch.Coordinator) -> AsyncLockHandle:
    backend = coordinator._backend
    assert isinstance(backend, FileBackend)
    return backend.async_handle(NAME.encode(), lambda reason: None)


async def _ticks_while(task: asyncio.Future[object], period: float = 0.01) -> int:
    ticks = 0
    while not task.done():
        await asyncio.sleep(period)
        ticks += 1
    return ticks


@pytest.mark.parametrize("ending", ["release", "sigkill"])
@pytest.mark.parametrize("blocking", [True, 30.0], ids=["forever", "timed"])
def test_a_waiter_wakes_at_once_when_the_holding_process_releases_or_dies(
    url: str, blocking: bool | float, ending: str
) -> None:
    holder = file_helpers.run(HOLDER, url, NAME)

    async def main() -> None:
        held_token = int(workers.expect(holder, "held "))
        async with await conch.aio.connect(url) as coordinator:
            lock = coordinator.lock(NAME)
            waiter = asyncio.ensure_future(lock.acquire(blocking))
            await asyncio.sleep(0.3)
            assert not waiter.done(), "acquired a lock another process holds"
            if ending == "release":
                file_helpers.tell(holder, "release")
            else:
                holder.kill()  # SIGKILL: the kernel closes its descriptors
            ended = time.monotonic()
            assert await asyncio.wait_for(waiter, 10) is True
            took = time.monotonic() - ended
            assert took < HANDOFF_WITH_NOTIFY, f"woken {took:.3f} s after the {ending}"
            assert lock.token is not None and lock.token > held_token
            await lock.release()

    try:
        asyncio.run(main())
    finally:
        file_helpers.stop(holder)


@pytest.mark.timeout(120)
def test_a_hundred_waiters_add_no_thread_and_share_one_inotify_instance(url: str) -> None:
    entered: list[int] = []

    async def take(lock: conch.aio.AsyncLock, index: int) -> None:
        async with lock:
            entered.append(index)

    async def main() -> None:
        with conch.connect(url) as other:
            holder = other.lock(NAME)
            assert holder.acquire()
            members = [await conch.aio.connect(url) for _ in range(3)]  # three backend waits
            threads = threading.active_count()
            tasks = [asyncio.ensure_future(take(members[index % 3].lock(NAME), index))
                     for index in range(100)]
            ticks = await _ticks_while(asyncio.ensure_future(asyncio.sleep(1.0)))
            assert ticks >= 20, f"the loop ran {ticks} times in 1 s while 100 coroutines waited"
            assert not any(task.done() for task in tasks), "a waiter entered a held lock"
            assert threading.active_count() == threads, "waiting started threads"
            assert len(_inotify_descriptors()) == 1, "one inotify instance per event loop"
            holder.release()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            for member in members:
                await member.stop()
        assert not _inotify_descriptors(), "the inotify instance is still in use"
        assert len(file_inotify.idle) <= file_inotify.IDLE_INSTANCES

    asyncio.run(main())
    assert sorted(entered) == list(range(100))


@pytest.mark.parametrize("wakeup", ["release", "spurious", "none"])
def test_cancelling_an_acquire_at_any_point_leaves_the_lock_free(
    directory: pathlib.Path, url: str, wakeup: str
) -> None:
    """Cancel after every number of loop turns: before the first try, while waiting,
    with an event on its way, woken and retrying; nothing stays held or open."""

    async def main() -> None:
        with conch.connect(url) as coordinator:
            path = directory / lock_file_name(NAME.encode())
            holder, probe = coordinator.lock(NAME), coordinator.lock(NAME)
            assert holder.acquire()
            holder.release()  # the file exists from now on
            before = _descriptors()
            for turns in range(12):
                handle = _async_handle(coordinator)
                assert holder.acquire()
                acquiring = asyncio.ensure_future(handle.acquire(Deadline(30)))
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if wakeup == "release":
                    holder.release()
                elif wakeup == "spurious":
                    os.close(os.open(path, os.O_RDWR))  # a writer's close: not a release
                for _ in range(turns):
                    await asyncio.sleep(0)
                acquiring.cancel()
                try:
                    token = await acquiring
                except asyncio.CancelledError:
                    pass
                else:  # it won the race with the cancellation: a plain hold
                    assert token is not None and wakeup == "release"
                    await handle.release()
                if wakeup != "release":
                    holder.release()
                assert probe.acquire(blocking=False), f"held after a cancel at turn {turns}"
                probe.release()
                assert _descriptors() == before, f"a descriptor left open at turn {turns}"

    asyncio.run(main())


def test_tokens_strictly_increase_across_sync_and_async_holders(url: str) -> None:
    tokens: list[int] = []  # appended inside the critical section: in the order of holds
    stop_at = time.monotonic() + 2.0

    def sync_holder(coordinator: conch.Coordinator) -> None:
        lock = coordinator.lock(NAME)
        while time.monotonic() < stop_at:
            with lock:
                assert lock.token is not None
                tokens.append(lock.token)

    async def async_holder(lock: conch.aio.AsyncLock) -> None:
        while time.monotonic() < stop_at:
            async with lock:
                assert lock.token is not None
                tokens.append(lock.token)
                await asyncio.sleep(0)

    async def main() -> None:
        async with await conch.aio.connect(url) as first, await conch.aio.connect(url) as second:
            await asyncio.gather(*(async_holder(member.lock(NAME))
                                   for member in (first, second, first)))

    with conch.connect(url) as coordinator:
        threads = [threading.Thread(target=sync_holder, args=(coordinator,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        asyncio.run(main())
        for thread in threads:
            thread.join()
    assert len(tokens) > 10
    assert tokens == sorted(set(tokens)), "tokens out of order"


def test_a_timed_wait_returns_false_near_its_deadline_leaving_nothing_open(url: str) -> None:
    async def main() -> None:
        with conch.connect(url) as other:
            assert other.lock(NAME).acquire()
            async with await conch.aio.connect(url) as coordinator:
                lock = coordinator.lock(NAME)
                assert await lock.acquire(blocking=False) is False
                before = _descriptors()
                started = time.monotonic()
                waiter = asyncio.ensure_future(lock.acquire(blocking=0.5))
                await asyncio.sleep(0.2)
                (inotify,) = _inotify_descriptors()
                assert await waiter is False
                waited = time.monotonic() - started
                assert 0.5 <= waited < 0.5 + HANDOFF_WITH_NOTIFY, f"gave up after {waited} s"
                await asyncio.sleep(0.1)  # the queue's acquire task ends after the waiter
                assert not asyncio.get_running_loop().remove_reader(inotify), "reader left"
                assert _descriptors() == before, "a descriptor left open"

    asyncio.run(main())


@pytest.mark.parametrize("ending", ["timeout", "cancel"])
def test_an_acquire_that_ends_unheld_closes_its_inotify_descriptor_and_reader(
    url: str, ending: str
) -> None:
    async def main() -> None:
        with conch.connect(url) as coordinator:
            assert coordinator.lock(NAME).acquire()
            handle = _async_handle(coordinator)
            assert await handle.acquire(Deadline(0)) is None
            before = _descriptors()
            acquiring = asyncio.ensure_future(handle.acquire(Deadline(0.4)))
            await asyncio.sleep(0.2)
            (inotify,) = _inotify_descriptors()
            if ending == "timeout":
                assert await acquiring is None
            else:
                acquiring.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await acquiring
            assert not asyncio.get_running_loop().remove_reader(inotify), "reader left"
            assert _descriptors() == before, "a descriptor left open"

    asyncio.run(main())


def test_stopping_the_coordinator_while_held_frees_the_lock_at_once(url: str) -> None:
    async def main() -> None:
        async with await conch.aio.connect(url) as waiting_member:
            holder_member = await conch.aio.connect(url)
            holder = holder_member.lock(NAME)
            assert await holder.acquire()
            waiter = asyncio.ensure_future(waiting_member.lock(NAME).acquire(blocking=30))
            await asyncio.sleep(0.3)
            assert not waiter.done()
            stopped = time.monotonic()
            await holder_member.stop()
            assert holder.lost.is_set()
            assert await asyncio.wait_for(waiter, 10) is True
            took = time.monotonic() - stopped
            assert took < HANDOFF_WITH_NOTIFY, f"the other member waited {took:.3f} s"

    asyncio.run(main())
    with conch.connect(url) as coordinator:
        assert coordinator.lock(NAME).acquire(blocking=False)


@pytest.mark.parametrize("blocking", [True, 30.0], ids=["forever", "timed"])
def test_a_waiter_that_locks_an_unlinked_file_keeps_waiting_for_the_linked_one(
    directory: pathlib.Path, url: str, blocking: bool | float
) -> None:
    async def main() -> None:
        with conch.connect(url) as coordinator:
            holder = coordinator.lock(NAME)
            assert holder.acquire()
            async with await conch.aio.connect(url) as member:
                lock = member.lock(NAME)
                waiter = asyncio.ensure_future(lock.acquire(blocking))
                await asyncio.sleep(0.2)
                (directory / lock_file_name(NAME.encode())).unlink()  # as a sweep does
                newcomer = coordinator.lock(NAME)
                assert newcomer.acquire(blocking=False), "the path's new file should be free"
                with pytest.raises(conch.LockLost, match="was removed while held"):
                    holder.release()  # frees the unlinked file the waiter waits on
                await asyncio.sleep(0.3)
                assert not waiter.done(), "the waiter took the lock of an unlinked file"
                newcomer.release()  # wakes it only if it now watches the new file
                assert await asyncio.wait_for(waiter, HANDOFF_WITH_NOTIFY) is True
                await lock.release()

    asyncio.run(main())


def test_an_async_waiter_returns_at_once_after_the_release(directory: pathlib.Path) -> None:
    # The loop's inotify instance is kept for the next wait, not closed (closing waits
    # ~16 ms for a kernel grace period), so a waiter that got the lock returns at once.
    url = f"file://{directory}"

    async def main() -> list[float]:
        async with await conch.aio.connect(url) as first, await conch.aio.connect(url) as second:
            holder, waiter = first.lock("handoff"), second.lock("handoff")
            assert await holder.acquire()
            delays = []
            for _ in range(15):
                waiting = asyncio.ensure_future(waiter.acquire(blocking=10))
                await asyncio.sleep(0.02)
                released = time.perf_counter()
                await holder.release()
                assert await waiting
                delays.append(time.perf_counter() - released)
                holder, waiter = waiter, holder
            await holder.release()
            return delays

    delays = asyncio.run(main())
    assert statistics.median(delays) < 0.008, f"hand-offs took {sorted(delays)}"
