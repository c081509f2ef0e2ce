"""A holder process that dies (SIGKILL: no clean-up code runs) does not keep its locks."""

from __future__ import annotations

import signal
import time

import pytest

import conch
from tests.contract import workers
from tests.contract.waiting import dead_holder_bound


@pytest.mark.timeout(180)
def test_a_killed_holder_process_frees_its_lock(
    url: str, backend: str, coordinator: conch.Coordinator, lock_name: str
) -> None:
    if backend == "memory":
        pytest.skip("memory:// locks live inside one process")
    holder = workers.spawn(url, "hold", lock_name)
    try:
        dead_holders_token = workers.expect(holder, "held ")
        lock = coordinator.lock(lock_name)
        assert lock.acquire(blocking=False) is False, "the holder process does not hold it"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        bound = dead_holder_bound(coordinator)
        assert lock.acquire(blocking=bound), f"still held {bound} s after its holder died"
        freed_after = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
    if coordinator.capabilities.fencing:
        assert lock.token is not None and lock.token > int(dead_holders_token)
    lock.release()
    assert freed_after < bound
