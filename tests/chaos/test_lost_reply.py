"""An acquire applied by the server whose reply never reaches the client.

The proxy in front of the server delivers the acquire, drops the reply and resets
the connection (:meth:`tests.chaos.proxy.Proxy.drop_next_reply`). Whatever the
backend then does (retry and find its own hold, give up and undo, or let the
server end the session), the outcome must be one of two: the caller holds the
lock (and nobody else does), or it does not and the lock is free again at once.
Leases are half a minute here, so a lock orphaned until its lease ends is caught.
"""

from __future__ import annotations

import time

import pytest

import conch
from tests.chaos.scenario import Scenario
from tests.chaos.targets import SERVER_BACKENDS

FREE_AGAIN = 3.0
"""Seconds within which the lock must be free again (the lease is 30 s)."""



def acquire_request(backend: str, lock_name: str) -> bytes:
    """Bytes found in the request that takes the lock, and in no request before it."""
    return {
        "redis": b"EVALSHA",  # the ACQUIRE script
        "etcd": b"/v3/kv/txn",
        "zookeeper": lock_name.encode(),  # in the path of the queue node created
        "postgresql": b"conch_try",  # the prepared try-lock statement
        "mysql": b"",  # TLS hides the statement: the acquire is the first request
        "memcached": b"ms ",  # the add of the holder key (meta set, add mode)
    }[backend]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", SERVER_BACKENDS, indirect=True)
def test_an_acquire_whose_reply_is_lost_leaves_no_orphan_and_no_second_holder(
    scenario: Scenario,
) -> None:
    link = scenario.proxy()
    unlucky = scenario.holder("reply-lost", url=scenario.target.url(via=link, long_lease=True))
    other = scenario.holder("other", url=scenario.target.url(long_lease=True))
    # One cycle first, so the next request through the proxy is the acquire itself
    # (connections, sessions and scripts are ready).
    assert unlucky.acquire(5) is not None
    assert not unlucky.release()

    link.drop_next_reply(acquire_request(scenario.target.backend, scenario.lock_name))
    try:
        token = unlucky.acquire(5)
        outcome = "acquire returned: held" if token is not None else "acquire returned False"
    except conch.ConchError as exc:
        token, outcome = None, f"acquire raised {type(exc).__name__}"
    assert link.reply_dropped, "the acquire sent nothing through the proxy"
    scenario.note("lost reply", outcome)
    if token is not None:
        assert other.acquire(0) is None, "two holders after a lost reply"
        unlucky.read()
        unlucky.write()
        assert not unlucky.release()

    left = time.monotonic()
    assert other.acquire(FREE_AGAIN) is not None, "the lock was orphaned by the lost reply"
    scenario.measure("lock free again after the lost reply", time.monotonic() - left)
    other.read()
    other.write()
    assert not other.release()
    assert unlucky.acquire(5) is not None, "the coordinator does not lock any more"
    unlucky.read()
    unlucky.write()
    assert not unlucky.release()
    scenario.check()
