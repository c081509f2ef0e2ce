"""``@synchronized``: functions, methods and coroutines run holding a lock named from their call."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import conch
from conch import decorators


@pytest.fixture
def coordinator() -> Iterator[conch.Coordinator]:
    with conch.connect(f"memory://synchronized-{uuid.uuid4().hex}") as started:
        yield started


def _is_held(coordinator: conch.Coordinator, name: str) -> bool:
    probe = coordinator.lock(name)
    if probe.acquire(blocking=False):
        probe.release()
        return False
    return True


@dataclass
class Vnf:
    id: int


def test_plain_function_runs_holding_its_lock_and_returns_its_result(
    coordinator: conch.Coordinator,
) -> None:
    @conch.synchronized("heal-{vnf_id}", coordinator=coordinator)
    def heal(vnf_id: int) -> str:
        assert _is_held(coordinator, f"heal-{vnf_id}")
        assert not _is_held(coordinator, "heal-43")
        return "healed"

    assert heal(42) == "healed"
    assert not _is_held(coordinator, "heal-42")


def test_method_lock_name_comes_from_its_instance(coordinator: conch.Coordinator) -> None:
    class Conductor:
        def __init__(self, host: str) -> None:
            self.host = host

        @conch.synchronized("{f_name}-{self.host}-{vnf.id}", coordinator=coordinator)
        def migrate(self, vnf: Vnf) -> str:
            assert _is_held(coordinator, f"migrate-{self.host}-{vnf.id}")
            return self.host

    assert Conductor("compute-1").migrate(Vnf(7)) == "compute-1"
    assert not _is_held(coordinator, "migrate-compute-1-7")


def test_template_uses_parameters_defaults_attributes_and_the_function_name(
    coordinator: conch.Coordinator,
) -> None:
    @conch.synchronized("{f_name}-{vnf.id}-{region}-{tags[0]}", coordinator=coordinator)
    def heal(vnf: Vnf, tags: list[str], region: str = "eu") -> bool:
        return _is_held(coordinator, f"heal-{vnf.id}-{region}-{tags[0]}")

    assert heal(Vnf(42), ["gold"]) is True
    assert heal(Vnf(43), tags=["silver"], region="us") is True


def test_a_template_field_that_is_not_a_parameter_fails_at_decoration(
    coordinator: conch.Coordinator,
) -> None:
    decorate = conch.synchronized("heal-{vnf.id}", coordinator=coordinator)
    with pytest.raises(ValueError, match=r"'vnf'.*not a parameter"):
        @decorate
        def heal(vnf_id: int) -> None: ...


def test_a_positional_template_field_fails_at_decoration(coordinator: conch.Coordinator) -> None:
    with pytest.raises(ValueError, match="must name its fields"):
        @conch.synchronized("heal-{0}", coordinator=coordinator)
        def heal(vnf_id: int) -> None: ...


def test_an_invalid_blocking_value_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="blocking"):
        conch.synchronized("x", blocking=-1)


def test_blocking_false_raises_lock_acquire_failed_when_held_without_running(
    coordinator: conch.Coordinator,
) -> None:
    calls: list[int] = []

    @conch.synchronized("heal-{vnf_id}", blocking=False, coordinator=coordinator)
    def heal(vnf_id: int) -> None:
        calls.append(vnf_id)

    with coordinator.lock("heal-42"), pytest.raises(conch.LockAcquireFailed, match="heal-42"):
        heal(42)
    assert calls == []
    heal(42)
    assert calls == [42]


def test_timed_blocking_waits_about_that_long_before_failing(
    coordinator: conch.Coordinator,
) -> None:
    @conch.synchronized("heal", blocking=0.3, coordinator=coordinator)
    def heal() -> None: ...

    with coordinator.lock("heal"):
        started = time.monotonic()
        with pytest.raises(conch.LockAcquireFailed, match=r"within 0\.3 s"):
            heal()
        assert 0.25 <= time.monotonic() - started < 2.5


def test_an_exception_in_the_function_releases_the_lock(coordinator: conch.Coordinator) -> None:
    @conch.synchronized("heal", coordinator=coordinator)
    def heal() -> None:
        raise RuntimeError("heal failed")

    with pytest.raises(RuntimeError, match="heal failed"):
        heal()
    assert not _is_held(coordinator, "heal")


def test_debug_log_names_the_lock_the_function_and_the_seconds_waited_and_held(
    coordinator: conch.Coordinator, caplog: pytest.LogCaptureFixture,
) -> None:
    @conch.synchronized("heal-{vnf_id}", coordinator=coordinator)
    def heal(vnf_id: int) -> None:
        time.sleep(0.05)

    caplog.set_level(logging.DEBUG, logger="conch")
    heal(42)
    acquired, released = [record for record in caplog.records if record.name == "conch"]
    for record in (acquired, released):
        assert record.levelno == logging.DEBUG
        assert "'heal-42'" in record.getMessage() and "heal" in record.getMessage()
    assert "waiting" in acquired.getMessage()
    held = float(released.getMessage().rsplit("holding ", 1)[1].split()[0])
    assert held >= 0.04


def test_no_coordinator_uses_the_default_from_conch_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"memory://default-{uuid.uuid4().hex}"
    monkeypatch.setenv("CONCH_URL", url)
    monkeypatch.setattr(decorators, "_default", None)
    with conch.connect(url) as observer:

        @conch.synchronized("heal-{vnf_id}")
        def heal(vnf_id: int) -> bool:
            return _is_held(observer, f"heal-{vnf_id}")

        try:
            assert heal(42) is True
            assert decorators._default is not None and decorators._default.url == url
        finally:
            if decorators._default is not None:
                decorators._default.stop()


def test_async_function_runs_holding_its_lock(coordinator: conch.Coordinator) -> None:
    @conch.synchronized("heal-{vnf_id}", coordinator=coordinator)
    async def heal(vnf_id: int) -> bool:
        await asyncio.sleep(0)
        return _is_held(coordinator, f"heal-{vnf_id}")

    assert asyncio.run(heal(42)) is True
    assert not _is_held(coordinator, "heal-42")


def test_async_wait_does_not_block_the_event_loop(coordinator: conch.Coordinator) -> None:
    @conch.synchronized("heal", coordinator=coordinator)
    async def heal() -> float:
        return time.monotonic()

    holder = coordinator.lock("heal")
    assert holder.acquire()
    threading.Timer(0.3, holder.release).start()

    async def main() -> tuple[int, float]:
        ticks = 0
        task = asyncio.ensure_future(heal())
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return ticks, await task

    started = time.monotonic()
    ticks, entered = asyncio.run(main())
    assert entered - started >= 0.25, "the function ran while the lock was held"
    assert ticks >= 10, f"the loop only ran {ticks} times while the function waited"


def test_async_blocking_false_raises_lock_acquire_failed(coordinator: conch.Coordinator) -> None:
    @conch.synchronized("heal", blocking=False, coordinator=coordinator)
    async def heal() -> None: ...

    with coordinator.lock("heal"), pytest.raises(conch.LockAcquireFailed):
        asyncio.run(heal())


def test_a_cancelled_async_acquire_leaves_nothing_held(coordinator: conch.Coordinator) -> None:
    ran: list[bool] = []

    @conch.synchronized("heal", coordinator=coordinator)
    async def heal() -> None:
        ran.append(True)

    holder = coordinator.lock("heal")
    assert holder.acquire()

    async def cancel_while_waiting() -> None:
        task = asyncio.ensure_future(heal())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        holder.release()  # the abandoned wait now gets the lock, and must give it back
        await asyncio.sleep(0.2)

    asyncio.run(cancel_while_waiting())
    assert ran == []
    probe = coordinator.lock("heal")
    assert probe.acquire(blocking=5), "the cancelled acquire kept the lock"
    probe.release()
