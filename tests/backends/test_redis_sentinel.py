"""redis:// through Sentinel: a real master, replica and sentinel; the master is killed.

The sentinel declares the master down after 1 s without answers and, as the
only sentinel (quorum 1), promotes the replica; the lock's connections follow.

A *secure* group speaks only TLS (the test CA's certificates, client certificates required
everywhere: the replica and the sentinel show the server's) and has ACL users: on the
master and replica ``conch`` (clients), ``sentinel`` (the sentinel's) and ``replica``
(replication); on the sentinel ``watcher`` (clients). No default user anywhere.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator

import pytest

import conch
import conch.aio
from conch.backends.redis.steps import lock_keys
from tests.backends import tls_failures
from tests.compat.test_tooz_tls import locks_through_tooz
from tests.servers.base import require_binary, wait_until
from tests.servers.redis import RedisProcess, start_redis, tls_query
from tests.tls import PKI

MASTER_NAME = "conch-master"

SENTINEL_CONF = """\
port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor {name} 127.0.0.1 {master_port} 1
sentinel down-after-milliseconds {name} 1000
sentinel failover-timeout {name} 10000
"""
SECURE_SENTINEL_CONF = """\
port 0
tls-port {port}
tls-cert-file {pki.server_cert}
tls-key-file {pki.server_key}
tls-ca-cert-file {pki.ca}
tls-auth-clients yes
tls-replication yes
bind 127.0.0.1
dir {dir}
user default off
user watcher on >{watcher_password} +@all
sentinel monitor {name} 127.0.0.1 {master_port} 1
sentinel auth-user {name} sentinel
sentinel auth-pass {name} {sentinel_password}
sentinel down-after-milliseconds {name} 1000
sentinel failover-timeout {name} 10000
"""
CONCH_PASSWORD = "conch-pw-5e1b"
SENTINEL_PASSWORD = "sentinel-pw-77c0"
WATCHER_PASSWORD = "watcher-pw-0d9a"
REPLICA_PASSWORD = "replica-pw-c3f2"
ACL_ARGUMENTS = [
    "--user", "default", "off",
    "--user", "conch", "on", f">{CONCH_PASSWORD}", "~*", "&*", "+@all",
    "--user", "sentinel", "on", f">{SENTINEL_PASSWORD}", "allchannels", "+@all",
    "--user", "replica", "on", f">{REPLICA_PASSWORD}", "+psync", "+replconf", "+ping",
    "--masteruser", "replica", "--masterauth", REPLICA_PASSWORD,
    "--tls-replication", "yes", "--tls-cluster", "no",
]


class SentinelGroup:
    """A master, its replica, and one sentinel watching them."""

    def __init__(self, secure: PKI | None = None) -> None:
        self.secure = secure
        acl = ACL_ARGUMENTS if secure else []
        user = {"tls": secure, "username": "conch", "password": CONCH_PASSWORD} if secure \
            else {}
        self.master = start_redis(*acl, name="redis-master", **user)  # type: ignore[arg-type]
        self.replica = start_redis(*acl, "--replicaof", "127.0.0.1", str(self.master.port),
                                   name="redis-replica", **user)  # type: ignore[arg-type]
        wait_until(self._replica_in_sync, 15, "the replica's first sync")
        # Started after the sync, so its first INFO of the master lists the replica.
        self.sentinel = self._start_sentinel()
        wait_until(self._sentinel_knows_the_replica, 15, "the sentinel's view of the replica")

    def url(self, query: str = "") -> str:
        """The URL that finds the master through the sentinel (secure: over TLS, as
        ``conch`` on the master and ``watcher`` on the sentinel)."""
        if self.secure is None:
            return f"redis://127.0.0.1:{self.sentinel.port}/0?sentinel={MASTER_NAME}" + (
                f"&{query}" if query else "")
        return (f"rediss://conch:{CONCH_PASSWORD}@127.0.0.1:{self.sentinel.port}/0"
                f"?sentinel={MASTER_NAME}&sentinel_ssl=true&sentinel_username=watcher"
                f"&sentinel_password={WATCHER_PASSWORD}&{tls_query(self.secure)}"
                + (f"&{query}" if query else ""))

    def fail_over(self) -> float:
        """SIGKILL the master; return the seconds until the sentinel names the replica."""
        killed = time.monotonic()
        self.master.kill()
        wait_until(self._replica_promoted, 30, "the failover")
        return time.monotonic() - killed

    def cleanup(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.cleanup()

    def _start_sentinel(self) -> RedisProcess:
        binary = require_binary("redis-sentinel", "redis-sentinel")
        sentinel = RedisProcess("redis-sentinel", tls=self.secure)
        if self.secure:
            sentinel.username, sentinel.password = "watcher", WATCHER_PASSWORD
        conf = os.path.join(sentinel.data_dir, "sentinel.conf")  # the sentinel rewrites it

        def command() -> list[str]:  # written again for new ports on a retry
            with open(conf, "w") as out:
                out.write((SECURE_SENTINEL_CONF if self.secure else SENTINEL_CONF).format(
                    port=sentinel.port, dir=sentinel.data_dir, name=MASTER_NAME,
                    master_port=self.master.port, pki=self.secure,
                    watcher_password=WATCHER_PASSWORD, sentinel_password=SENTINEL_PASSWORD))
            return [binary, conf]

        sentinel.start_on_free_ports(command)
        return sentinel

    def _replica_in_sync(self) -> bool:
        with self.replica.admin() as replica:
            return bool(replica.info("replication").get("master_link_status") == "up")

    def _sentinel_knows_the_replica(self) -> bool:
        with self.sentinel.admin() as sentinel:
            replicas = sentinel.sentinel_slaves(MASTER_NAME)
        return any(int(replica["port"]) == self.replica.port for replica in replicas)

    def _replica_promoted(self) -> bool:
        # The sentinel names the new master a moment before it clears the failover's
        # down flags, and clients (redis-py) only trust a master without them.
        with self.sentinel.admin() as sentinel:
            state = sentinel.sentinel_master(MASTER_NAME)
        return bool(int(state["port"]) == self.replica.port
                    and not state["is_sdown"] and not state["is_odown"])


def running_group(secure: PKI | None = None) -> Iterator[SentinelGroup]:
    """A new group, for a fixture to yield; cleaned up after."""
    group = SentinelGroup(secure)
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    """A fresh group per test: a failover changes who is master."""
    yield from running_group()


def test_locks_through_sentinel_live_on_the_master(
    sentinel_group: SentinelGroup, lock_name: str
) -> None:
    with conch.connect(sentinel_group.url()) as coordinator, \
            coordinator.lock(lock_name) as lock:
        assert lock.token is not None
        with sentinel_group.master.admin() as master:
            assert master.exists(lock_keys(lock_name.encode()).holder) == 1


def test_locking_continues_after_a_failover(
    sentinel_group: SentinelGroup, lock_name: str
) -> None:
    with conch.connect(sentinel_group.url()) as coordinator:
        lock = coordinator.lock(lock_name)
        with lock:
            before = lock.token
        failover = sentinel_group.fail_over()
        started = time.monotonic()
        with lock:
            after = lock.token
        first_lock = time.monotonic() - started
    print(f"\nfailover took {failover:.2f} s; first lock after it {first_lock * 1000:.0f} ms")
    assert before is not None and after is not None and after > before


def test_a_lock_acquired_with_wait_replicas_is_still_held_on_the_new_master(
    sentinel_group: SentinelGroup, lock_name: str
) -> None:
    # The other member does not wait for replicas: after the failover there is none left.
    with conch.connect(sentinel_group.url("wait_replicas=1&ttl=10")) as holder, \
            conch.connect(sentinel_group.url()) as other:
        lock = holder.lock(lock_name)
        assert lock.acquire(blocking=False)
        sentinel_group.fail_over()  # right after: the acquire's WAIT saw the replica have it
        with sentinel_group.replica.admin() as new_master:
            assert new_master.exists(lock_keys(lock_name.encode()).holder) == 1
        assert other.lock(lock_name).acquire(blocking=False) is False
        time.sleep(10 / 3 + 0.5)  # at least one renewal, now on the new master
        assert lock.held and not lock.lost.is_set()
        lock.release()
        taker = other.lock(lock_name)
        assert taker.acquire(blocking=False)
        assert taker.token is not None and lock.token is None
        taker.release()


@pytest.fixture
def secure_group(pki: PKI) -> Iterator[SentinelGroup]:
    """A fresh TLS + ACL group (see the module documentation)."""
    yield from running_group(pki)


@pytest.fixture(scope="module")
def shared_secure_group(pki: PKI) -> Iterator[SentinelGroup]:
    """One TLS + ACL group for the tests that change nothing in it."""
    yield from running_group(pki)


def test_tls_and_acl_sentinels_survive_a_failover_and_the_new_holds_exclude(
    secure_group: SentinelGroup, lock_name: str
) -> None:
    with conch.connect(secure_group.url()) as first, conch.connect(secure_group.url()) as other:
        lock = first.lock(lock_name)
        with lock:
            before = lock.token
            with secure_group.master.admin() as master:
                assert master.exists(lock_keys(lock_name.encode()).holder) == 1
        secure_group.fail_over()
        assert lock.acquire(blocking=10)
        after = lock.token
        assert other.lock(lock_name).acquire(blocking=0.3) is False  # exclusive after it
        lock.release()
        taker = other.lock(lock_name)
        assert taker.acquire(blocking=False)
        assert before is not None and after is not None and taker.token is not None
        assert before < after < taker.token
        taker.release()


@pytest.mark.parametrize("case, expected", [
    ("wrong sentinel password", "the sentinels refused sentinel_username / sentinel_password"),
    ("no sentinel credentials", "the sentinels require a password: give sentinel_password"),
    ("no sentinel TLS", "the server expects TLS on this port: add sentinel_ssl=true"),
    ("wrong master password", "refused the URL's credentials"),
])
def test_wrong_sentinel_settings_are_one_clear_error_without_passwords(
    shared_secure_group: SentinelGroup, case: str, expected: str
) -> None:
    url = shared_secure_group.url("connect_timeout=1&socket_timeout=1")
    url = {
        "wrong sentinel password": url.replace(WATCHER_PASSWORD, "not-the-watcher-pw"),
        "no sentinel credentials": url.replace(
            f"&sentinel_username=watcher&sentinel_password={WATCHER_PASSWORD}", ""),
        "no sentinel TLS": url.replace("sentinel_ssl=true", "sentinel_ssl=false"),
        "wrong master password": url.replace(CONCH_PASSWORD, "not-the-conch-pw"),
    }[case]
    tls_failures.one_clear_error(
        url, f"127.0.0.1:{shared_secure_group.sentinel.port} (sentinels of 'conch-master')",
        re.escape(expected),
        [WATCHER_PASSWORD, CONCH_PASSWORD, "not-the-watcher-pw", "not-the-conch-pw"])


def test_tooz_sentinel_username_password_and_ssl_reach_the_master(
    shared_secure_group: SentinelGroup, lock_name: str
) -> None:
    pki = shared_secure_group.secure
    assert pki is not None
    # tooz's form: redis:// with ssl=true for the master, sentinel_ssl for the sentinels.
    url = (f"redis://conch:{CONCH_PASSWORD}@127.0.0.1:{shared_secure_group.sentinel.port}"
           f"?sentinel={MASTER_NAME}&sentinel_username=watcher"
           f"&sentinel_password={WATCHER_PASSWORD}&sentinel_ssl=true&ssl=true&db=0"
           f"&ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}"
           f"&ssl_keyfile={pki.client_key}")
    locks_through_tooz(url, lock_name)


def test_async_locks_through_tls_and_acl_sentinels(
    shared_secure_group: SentinelGroup, lock_name: str
) -> None:
    async def main() -> int | None:
        async with await conch.aio.connect(shared_secure_group.url()) as coordinator, \
                coordinator.lock(lock_name) as lock:
            return lock.token

    assert asyncio.run(main()) is not None
