"""``redis://`` and ``rediss://`` (TLS): TTL locks on a Redis master (found by Sentinel if asked).

Translation of the contract (the scripts are in :mod:`conch.backends.redis.scripts`):

* **hold**: the name's holder key, set to a random value of this hold with a TTL
  (``?ttl=``, default 10 s) by the ACQUIRE script; RELEASE deletes it only if it
  still has that value, so a late release never frees another holder's lock.
* **liveness**: the coordinator's one :class:`~conch.backends.kit.session.Heartbeat`
  renews every key it holds with one RENEW call (one round-trip, whatever the
  number of locks) every ``ttl / 3``. A key found gone or taken over is reported
  lost. When renewals fail (server unreachable), each hold is reported lost at
  the last failed renewal before its TTL would end, so the holder knows before
  anyone else can take the lock. A crashed holder's locks are free after the TTL:
  the backend is not session-bound.
* **wait**: RELEASE leaves one signal on the name's wake list and ``BLPOP``
  hands it to one waiter, which retries. The list outlives the release briefly,
  so a waiter between its failed attempt and its ``BLPOP`` still finds it. A
  holder whose TTL runs out sends no signal: waiters block for at most the
  holder's remaining TTL (its ``PTTL``), then retry.
* **fencing token**: a per-name counter incremented by ACQUIRE in the same
  script; it never expires and is first raised to the server clock in µs, so
  tokens keep increasing after a restart that lost it.
* **lost replies**: one acquire keeps its hold value across retries; a retry
  that finds its own value gets the hold's token back instead of orphaning it.
* **introspection** (``conch show``, ``conch break``): :mod:`conch.backends.redis.inspection`.
* **names**: ``conch:<sha256 hex of the name>:{holder,token,wake}``: any bytes,
  bounded length, distinct names never share a key.
* **Sentinel** (``?sentinel=MASTER``): connections follow the current master. With
  ``?wait_replicas=N`` an acquire counts only once ``N`` replicas acknowledged it
  (``WAIT``), so a failover right after it does not hand the lock to someone else.

**asyncio** (``conch.aio``): :mod:`conch.backends.redis.async_lock`, the same steps on a
``redis.asyncio`` pool per event loop; its holds are renewed by the same heartbeat.

Error handling: each call waits at most ``socket_timeout`` for its reply
(connecting: ``connect_timeout``; both 2 s by default), then raises
:class:`~conch.BackendUnavailable`. An acquire or release is first retried once
on a fresh connection: both steps are idempotent. An acquire that fails leaves
nothing held: it frees what it may have taken or, failing that, the key expires
after the TTL. A waiter whose ``BLPOP`` connection breaks retries its acquire at
once. During a Sentinel failover calls fail until the sentinel names the new
master; holds survive when that happens before their TTL runs out.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch import metrics
from conch.backends.base import AsyncLockHandle, Backend, Deadline, LockHandle, LossCallback
from conch.backends.kit.session import Heartbeat, Holds
from conch.backends.redis import inspection
from conch.backends.redis.async_client import AsyncClients, AsyncRedisClient
from conch.backends.redis.async_lock import RedisAsyncLock
from conch.backends.redis.client import RedisClient, RedisOptions
from conch.backends.redis.scripts import RENEW
from conch.backends.redis.steps import (
    KEY_PREFIX,
    LockKeys,
    RedisHold,
    acquire_commands,
    acquire_outcome,
    check_released,
    int_reply,
    lock_keys,
    release_command,
    wait_command,
)
from conch.capabilities import Capabilities
from conch.errors import BackendUnavailable, NotStarted
from conch.introspection import HolderStamp, LockInfo
from conch.url import BackendURL

log = logging.getLogger("conch")

_TRANSIENT = (RedisConnectionError, RedisTimeoutError)


class RedisBackend(Backend):
    """Locks on a Redis master (see the module documentation)."""

    capabilities = Capabilities(
        session_bound=False, fencing=True, fifo=False, notify=True,
        shared_locks=False, distributed=True, introspection=True, breakable=True,
        native_async=True,
    )

    def __init__(self, url: BackendURL, member_id: str) -> None:
        super().__init__(url, member_id)
        self.options = RedisOptions.from_url(url)
        self.holds: Holds[RedisHold] = Holds()
        self._client: RedisClient | None = None
        self._closed_client: RedisClient | None = None
        self.async_clients = AsyncClients(url, self.options)
        self._heartbeat: Heartbeat | None = None

    def connect(self) -> None:
        client = RedisClient(self.url, self.options)
        try:
            client.load_scripts()
        except RedisError as exc:
            client.close()
            raise BackendUnavailable(client.describe_start_failure(exc)) from None
        self._client = client
        self._heartbeat = Heartbeat("conch-redis-renewal", self.options.ttl / 3, self.renew)
        self._heartbeat.start()

    def close(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
        self.holds.lose_all("the coordinator was stopped")
        client, self._client = self._client, None
        if client is not None:
            self._closed_client = client  # see abandon()
            client.close()
        self.async_clients.close()

    async def close_async(self) -> None:
        await self.async_clients.close_running()

    def handle(self, key: bytes, on_lost: LossCallback) -> LockHandle:
        return _RedisLock(self, lock_keys(key), HolderStamp(key, self.member_id), on_lost)

    def async_handle(self, key: bytes, on_lost: LossCallback) -> AsyncLockHandle:
        return RedisAsyncLock(self, lock_keys(key), HolderStamp(key, self.member_id), on_lost)

    def async_client(self) -> AsyncRedisClient:
        """The running event loop's client; :class:`NotStarted` once the coordinator stops."""
        if self._client is None:
            raise NotStarted("the coordinator of this lock was stopped")
        return self.async_clients.running()

    def describe_lock(self, key: bytes) -> LockInfo:
        with self._calls() as client:
            return inspection.describe(client, lock_keys(key), key)[0]

    def list_locks(self, prefix: bytes) -> list[LockInfo]:
        with self._calls() as client:
            return inspection.held_locks(client, KEY_PREFIX)

    def break_lock(self, key: bytes, token: int | None) -> LockInfo:
        with self._calls() as client:
            return inspection.break_hold(client, lock_keys(key), key, token,
                                               release_command)

    @contextlib.contextmanager
    def _calls(self) -> Iterator[RedisClient]:
        """The open client; Redis errors in the block leave as :class:`BackendUnavailable`."""
        client = self._client
        if client is None:
            raise NotStarted("the coordinator of this lock was stopped")
        try:
            yield client
        except RedisError as exc:
            raise BackendUnavailable(client.describe(exc)) from None

    def new_hold_value(self, stamp: HolderStamp | None = None) -> bytes:
        """A value no other hold ever has, then the hold's stamp (for ``conch show``;
        without one, the member id: for people reading keys)."""
        unique = secrets.token_hex(16).encode() + b" "
        if stamp is None:
            return unique + self.member_id.encode("utf-8", "backslashreplace")
        return unique + stamp.stamp()

    def try_acquire(self, keys: LockKeys, value: bytes) -> tuple[int | None, float]:
        """One attempt to hold ``keys`` with ``value``: ``(token, 0)``, or ``(None, seconds)``
        until the current holder's TTL ends. Repeating it with the same ``value`` is safe."""
        commands, timeout = acquire_commands(keys, value, self.options)
        with self._calls() as client:
            try:
                return acquire_outcome(_retry_once(lambda: client.run(commands, timeout)),
                                       self.options)
            except BaseException:
                self.abandon(keys, value)
                raise

    def wait_for_release(self, keys: LockKeys, seconds: float) -> None:
        """Block until a release signals ``keys`` or ``seconds`` pass (no sleep: ``BLPOP``).

        A connection failure ends the wait early: the caller's next attempt tells
        whether the server is really gone (and the lock may be free if it restarted).
        """
        with self._calls() as client:
            try:
                reply = client.roundtrip([wait_command(keys, seconds)],
                                         timeout=seconds + self.options.socket_timeout)[0]
            except _TRANSIENT:
                return
            if isinstance(reply, RedisError):
                raise reply

    def keep(self, keys: LockKeys, value: bytes, sent: float, on_lost: LossCallback) -> RedisHold:
        """Start renewing a hold acquired by a request sent at monotonic time ``sent``."""
        hold = RedisHold(keys, value, sent + self.options.ttl)
        self.holds.add(hold, on_lost)
        return hold

    def release(self, hold: RedisHold) -> None:
        """Stop renewing ``hold`` and free its lock, waking one waiter."""
        self.holds.discard(hold)
        if self._client is None:  # granted as the coordinator stopped: free it all the same
            self.abandon(hold.keys, hold.value)
            return
        with self._calls() as client:
            check_released(hold, _retry_once(lambda: client.run([release_command(hold)]))[0])

    def renew(self) -> None:
        """Renew every hold in one round-trip; report those found gone, or about to expire."""
        holds = self.holds.snapshot()
        client = self._client
        if not holds or client is None:
            return
        interval = self.options.ttl / 3
        sent = time.monotonic()
        command = RENEW.call([hold.keys.holder for hold in holds],
                             [self.options.ttl_ms, *(hold.value for hold in holds)])
        try:
            reply = client.run([command], timeout=min(self.options.socket_timeout, interval))[0]
            if isinstance(reply, RedisError):
                raise reply
        except RedisError as exc:
            why = client.describe(exc)
            log.warning("renewing %d redis lock(s) failed: %s", len(holds), why)
            metrics.record_renewals("redis", 0, len(holds))
            # The next renewal would come too late for these: the server frees them first.
            deadline = time.monotonic() + interval
            for hold in holds:
                if hold.valid_until <= deadline:
                    self.holds.lose(hold, f"renewals failed until its TTL ran out: {why}")
            return
        assert isinstance(reply, list)
        metrics.record_renewals("redis", sum(1 for renewed in reply if renewed))
        for hold, renewed in zip(holds, reply, strict=True):
            if renewed:
                hold.valid_until = sent + self.options.ttl
            else:
                self.holds.lose(hold, "its TTL ran out, it was broken (conch break), or "
                                "another holder took it")

    def abandon(self, keys: LockKeys, value: bytes) -> None:
        """Best effort, on the blocking client: free the lock of ``keys`` if ``value`` holds
        it (an acquire that is failing, or that got it as the coordinator stopped, may
        have taken it). Once closed, the client connects again for this, then closes."""
        client, closed = self._client, self._client is None
        if client is None:
            client = self._closed_client
        try:
            if client is None:
                raise NotStarted("the coordinator was stopped")
            int_reply(client.run([release_command(RedisHold(keys, value, 0.0))])[0])
        except Exception:
            log.warning("could not free lock key %s; it expires within the TTL",
                        keys.holder.decode())
        finally:
            if closed and client is not None:
                client.close()


class _RedisLock(LockHandle):
    def __init__(self, backend: RedisBackend, keys: LockKeys, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._backend = backend
        self._keys = keys
        self._stamp = stamp
        self._on_lost = on_lost
        self._hold: RedisHold | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        backend = self._backend
        while True:
            # A new value per attempt (a busy answer means the last one holds nothing),
            # so that the stamp tells when the hold began, not when the wait did.
            value = backend.new_hold_value(self._stamp)
            sent = time.monotonic()
            token, busy_for = backend.try_acquire(self._keys, value)
            if token is not None:
                self._hold = backend.keep(self._keys, value, sent, self._on_lost)
                return token
            remaining = deadline.remaining()
            if remaining == 0:
                return None
            backend.wait_for_release(
                self._keys, busy_for if remaining is None else min(busy_for, remaining)
            )

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._backend.release(hold)


def _retry_once(call: Callable[[], list[object]]) -> list[object]:
    """``call()``, once more after a connection failure (a stale pooled connection after a
    server restart, a master demoted by a failover): only for idempotent steps."""
    try:
        return call()
    except _TRANSIENT:
        return call()
