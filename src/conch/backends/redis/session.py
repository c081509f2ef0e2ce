"""One coordinator's blocking side of ``redis://``: its redis-py clients and registered
scripts, and the TTL session that renews all its holds (blocking or asyncio) in one RENEW
call per beat. Redis errors leave its steps as conch errors."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch.backends.kit.errors import translated, unavailable
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.tls import client_context
from conch.backends.kit.ttl import TtlHold, TtlSession
from conch.backends.redis import steps
from conch.backends.redis.client import RedisOptions
from conch.backends.redis.errors import describe, describe_start_failure
from conch.backends.redis.steps import LockKeys, Outcome
from conch.errors import NotStarted
from conch.url import BackendURL

log = logging.getLogger("conch")
TRANSIENT = (RedisConnectionError, RedisTimeoutError)
RedisHold = TtlHold[LockKeys]
T = TypeVar("T")


class RedisSession:
    """Three pools, by how long a reply may take: steps (``socket_timeout``), renewals
    (at most a beat) and waits (a ``BLPOP`` of up to one TTL)."""

    def __init__(self, url: BackendURL, options: RedisOptions) -> None:
        self.url, self.options, self.closed = url, options, False
        self.commands = options.client(options.socket_timeout)
        self._renewals = options.client(min(options.socket_timeout, options.ttl / 3))
        self._waits = options.client(options.ttl + options.socket_timeout)
        self.acquire_script, self.release_script, self._renew_script = (
            self.commands.register_script(source) for source in steps.SCRIPTS)
        self.ttl = self._new_ttl_session()
        # A client of one connection of the steps' pool (redis-py's single_connection_client)
        # for the steps of one thread at a time, made on first use (it connects): a step
        # sent on it skips the pool's checkout and return (docs/redis.md, "Cost").
        self._pinned: redis.Redis | None = None
        self._pinned_idle = threading.Lock()
        forget_in_child(self)

    def _new_ttl_session(self) -> TtlSession[LockKeys]:
        return TtlSession("redis", self.options.ttl, self._renew, self.describe, (RedisError,))

    def forget_parent(self) -> None:
        """In a forked child: the parent's holds and renewal thread are not the child's (the
        pools see the fork themselves and open new connections)."""
        self.ttl = self._new_ttl_session()
        self._pinned, self._pinned_idle = None, threading.Lock()
        if not self.closed:
            self.ttl.start()

    def describe(self, exc: BaseException) -> str:
        """``exc`` as a message for users."""
        return describe(self.url, self.options, exc)

    def start(self) -> None:
        """Check the server answers (loading the scripts), then start renewing."""
        if self.options.tls is not None:  # redis-py reads the files at each connection
            client_context(self.options.tls, f"redis at {self.options.where}")
        try:
            with self.commands.pipeline(transaction=False) as pipeline:
                for source in steps.SCRIPTS:
                    pipeline.script_load(source)
                pipeline.execute()
        except RedisError as exc:
            self.close()
            why = describe_start_failure(self.url, self.options, exc)
            raise unavailable(self.url, why) from None
        self.ttl.start()

    def close(self) -> None:
        """Stop renewing (every hold is reported lost) and close every connection: a wait
        in progress fails at once."""
        self.closed = True
        self.ttl.stop()
        for client in (self.commands, self._renewals, self._waits):
            _interrupt(client.connection_pool)
        # Held from now on: later steps (an abandon) take a connection of the pool.
        idle = self._pinned_idle.acquire(timeout=self.options.socket_timeout)
        if idle and self._pinned is not None:
            self._pinned.close()  # back to the pool, idle: nobody reads it, closed safely
            self.commands.connection_pool.disconnect(inuse_connections=False)

    def calls(self) -> contextlib.AbstractContextManager[None]:
        """Redis errors in the block leave as :class:`BackendUnavailable`."""
        if self.closed:
            raise NotStarted("the coordinator of this lock was stopped")
        return translated(self.url, (RedisError,), self.describe)

    def try_acquire(self, keys: LockKeys, value: bytes, retrying: bool = False) -> Outcome:
        """One attempt to hold ``keys`` with ``value``: ``(token, 0)``, or ``(None, seconds)``
        until the holder's TTL ends. Whatever fails, nothing is left held."""
        if self.closed:
            raise NotStarted("the coordinator of this lock was stopped")
        options = self.options
        # The uncontended path: flat, no context manager, EVALSHA without redis-py's
        # Script wrapper (which adds two imports and two isinstance checks per call).
        try:
            reply = self._idempotent(
                self.acquire_script, steps.acquire_args(keys, value, options.ttl_ms, retrying),
                steps.acquire_args(keys, value, options.ttl_ms, True))
            outcome = steps.acquire_outcome(reply, options.ttl)
            if outcome[0] is not None and options.wait_replicas:
                steps.check_replicas(self._waits.wait(options.wait_replicas,
                                                      options.ttl_ms // 3), options)
            return outcome
        except BaseException as exc:
            self.abandon(keys, value)
            if isinstance(exc, RedisError):
                raise unavailable(self.url, self.describe(exc)) from None
            raise

    def wait_and_try(self, keys: LockKeys, seconds: float,
                     value: bytes) -> tuple[Outcome, bytes | None]:
        """Until a release signals ``keys`` or ``seconds`` pass (``BLPOP``), then
        :meth:`try_acquire` in the same round-trip: the server runs it as the wait ends.
        Also returns the signal the wait took (None: none). A broken connection ends the
        wait early; then the attempt is made (or found) anew."""
        args = steps.acquire_args(keys, value, self.options.ttl_ms, False)
        with self.calls():
            try:
                with self._waits.pipeline(transaction=False) as pipeline:
                    pipeline.blpop([keys.wake], seconds)
                    pipeline.evalsha(self.acquire_script.sha, steps.KEY_COUNT, *args)
                    answer = steps.outcome_after_wait(pipeline.execute(False), self.options.ttl)
            except TRANSIENT:
                if self.closed:  # stop() ended the wait: free what the attempt may hold
                    self.abandon(keys, value)
                return self.try_acquire(keys, value, retrying=True), None
            except BaseException:
                self.abandon(keys, value)
                raise
            if answer is None:
                self.commands.script_load(steps.ACQUIRE)
                return self.try_acquire(keys, value), None
            if answer[0][0] is not None and self.options.wait_replicas:
                return self.try_acquire(keys, value, retrying=True), answer[1]  # then WAIT
            return answer

    def release(self, hold: RedisHold) -> None:
        """Stop renewing ``hold`` and free its lock, waking one waiter."""
        self.ttl.discard(hold)
        if self.closed:  # granted as the coordinator stopped: free it all the same
            self.abandon(hold.keys, hold.value)
            return
        args = steps.release_args(hold.keys, hold.value)
        try:
            released = self._idempotent(self.release_script, args, args)
        except RedisError as exc:
            raise unavailable(self.url, self.describe(exc)) from None
        steps.check_released(hold.keys, released)

    def abandon(self, keys: LockKeys, value: bytes) -> None:
        """Best effort: free the lock of ``keys`` if ``value`` holds it (an acquire failing
        or granted as the coordinator stopped may have taken it). Once closed, the client
        connects again for this, then closes."""
        try:
            self.free(keys, value)
        except RedisError:
            log.warning("could not free lock key %s; it expires within the TTL",
                        keys.holder.decode())
        finally:
            if self.closed:  # another thread's abandon may be using one still
                self.commands.connection_pool.disconnect(inuse_connections=False)

    def free(self, keys: LockKeys, value: bytes) -> Any:
        """RELEASE: free the lock of ``keys`` if ``value`` holds it and wake one waiter;
        1 if it did, else 0."""
        return self._run(self.release_script, steps.release_args(keys, value))

    def _idempotent(self, script: Script, args: steps.ScriptArgs,
                    again: steps.ScriptArgs) -> Any:
        """:meth:`_run` with ``args``, or with ``again`` after a connection failure
        (:func:`retry_once`)."""
        return retry_once(lambda retry: self._run(script, again if retry else args))

    def _run(self, script: Script, args: steps.ScriptArgs) -> Any:
        """``EVALSHA`` of ``script`` on the pinned connection, or one of the pool while
        another thread uses that."""
        if not self._pinned_idle.acquire(blocking=False):
            return _evalsha(self.commands, script, args)
        pinned = self._pinned
        try:
            if pinned is None:
                pinned = self._pinned = redis.Redis(
                    connection_pool=self.commands.connection_pool, single_connection_client=True)
            return _evalsha(pinned, script, args)
        except TRANSIENT:
            # Back to the pool, which connects it again: under Sentinel, to the master it
            # asks for (redis-py reconnects a pinned connection to its old address).
            if pinned is not None:
                pinned.close()
            self._pinned = None
            raise
        finally:
            self._pinned_idle.release()

    def _renew(self, holds: list[RedisHold], within: float) -> list[bool]:
        keys = [hold.keys.holder for hold in holds]
        args: list[bytes | int] = [self.options.ttl_ms, *(hold.value for hold in holds)]
        return [bool(renewed) for renewed in self._renew_script(keys, args,
                                                                client=self._renewals)]


def retry_once(call: Callable[[bool], T]) -> T:
    """``call(False)``, then ``call(True)`` after a connection failure (a stale pooled
    connection after a restart, a master demoted by a failover): idempotent steps only."""
    try:
        return call(False)
    except TRANSIENT:
        return call(True)


def _evalsha(client: redis.Redis, script: Script, args: steps.ScriptArgs) -> Any:
    """``EVALSHA`` of ``script``, loaded again if the server lost it (a restart)."""
    try:
        return client.evalsha(script.sha, steps.KEY_COUNT, *args)
    except NoScriptError:
        client.script_load(script.script)
        return client.evalsha(script.sha, steps.KEY_COUNT, *args)


def _interrupt(pool: redis.ConnectionPool) -> None:
    """Close the idle connections and shut down those in use (a ``BLPOP``): their readers
    wake at once and close them. A shim under redis-py (docs/redis.md): under eventlet, a
    socket closed by another green thread (``pool.disconnect()``) leaves its reader asleep
    (a waiter was still blocked at the eventlet test's 1.5 s bound past ``stop()``)."""
    for connection in list(getattr(pool, "_in_use_connections", ())):
        with contextlib.suppress(OSError, AttributeError):
            connection._sock.shutdown(socket.SHUT_RDWR)
    pool.disconnect(inuse_connections=False)
