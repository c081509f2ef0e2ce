"""The server restarted, or paused, while one process holds the lock and two others wait.

* **restart** (SIGTERM, start again on the same data): a server that forgets its
  locks (redis and memcached run without persistence here) or ends every session
  (postgresql, mysql) must tell the holder; one that keeps them (etcd, and
  ZooKeeper, which restores sessions from its data) may keep the hold.
* **pause** (SIGSTOP longer than the lease, then SIGCONT): every backend must tell
  the holder while the server is frozen, since it cannot know what the server
  will do once it runs again.

Then the waiters get the lock in turn, the old holder's late write is fenced out,
and the history and the fenced counter must show no violation. Measured: how
long after the fault the next holder got the lock, and when the holder was told.
"""

from __future__ import annotations

import time

import pytest

from tests.chaos.driver import Scripted, read_line
from tests.chaos.scenario import Scenario
from tests.chaos.targets import SERVER_BACKENDS

WAITERS = 2
RECOVERY = 30.0
"""Seconds within which a waiter must get the lock once the fault is over."""
TOLD_MARGIN = 3.0
"""Seconds beyond the lease within which a holder cut off from its server is told."""


def next_acquired(waiters: list[Scripted], timeout: float) -> Scripted:
    """The first of ``waiters`` (each sent ``acquire``) to answer ``acquired``; a waiter
    whose acquire failed (the server was away) is sent ``acquire`` again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for waiter in waiters:
            answer = read_line(waiter.process, 0.05)
            if answer.startswith("acquired "):
                return waiter
            if answer.startswith("error ") or answer == "refused":
                waiter.send(f"acquire {RECOVERY}")
            elif answer:
                raise AssertionError(f"{waiter.holder} answered {answer!r}")
    raise AssertionError(f"no waiter got the lock within {timeout} s")


def update_and_release(worker: Scripted) -> None:
    """The holder ``worker`` updates the counter and releases, unaware of any loss."""
    assert worker.ask("read").startswith("read ")
    assert worker.ask("write") == "accepted"
    assert worker.ask("release") == "released"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("fault", ["restart", "pause"])
@pytest.mark.parametrize("target", SERVER_BACKENDS, indirect=True)
def test_a_server_fault_while_held_and_awaited_never_gives_two_holders(
    scenario: Scenario, fault: str
) -> None:
    server = scenario.target.server
    assert server is not None
    lease = scenario.target.lease or 0.0
    holder = scenario.worker("holder")
    assert holder.ask("acquire 10").startswith("acquired ")
    assert holder.ask("read") == "read 0"
    waiters = [scenario.worker(f"waiter-{index}") for index in range(WAITERS)]
    for waiter in waiters:
        waiter.send(f"acquire {RECOVERY}")
    time.sleep(0.5)
    assert not any(read_line(waiter.process, 0) for waiter in waiters), "a waiter got in"

    faulted = time.monotonic()
    if fault == "pause":
        scenario.target.pause()
        try:
            told = holder.ask(f"wait-lost {lease + TOLD_MARGIN}").split()[0]
            scenario.measure("holder told, server frozen", time.monotonic() - faulted)
        finally:
            scenario.target.resume()
        assert told == "lost", "a holder whose server froze was never told"
        faulted = time.monotonic()
    else:
        server.restart()
        told = holder.ask(f"wait-lost {lease + TOLD_MARGIN}").split()[0]
        scenario.note("holder after the restart", "told of the loss" if told == "lost"
                      else "kept the lock")

    if told == "lost":
        first = next_acquired(waiters, RECOVERY)
        scenario.measure(f"next holder after the {fault}", time.monotonic() - faulted)
        assert first.ask("read").startswith("read ")
        assert first.ask("write") == "accepted"
        assert holder.ask("write") == "rejected", "the old holder's late write got through"
        assert holder.ask("release") == "lost"
        assert first.ask("release") == "released"
        waiters.remove(first)
    else:
        assert holder.ask("write") == "accepted"
        assert holder.ask("release") == "released"
    while waiters:
        waiter = next_acquired(waiters, RECOVERY)
        update_and_release(waiter)
        waiters.remove(waiter)
    assert scenario.check() == 1 + WAITERS
