"""One coordinator's blocking side of ``redis://``: its redis-py clients and scripts, and
two TTL sessions (lock holds; entries: shared holds, permits, waiting writers), each
renewing all of them in one script call per beat."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conch.backends.kit.errors import translated, unavailable
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.tls import client_context
from conch.backends.kit.ttl import TtlHold, TtlSession
from conch.backends.redis import share_scripts, steps
from conch.backends.redis.client import RedisOptions, describe, describe_start_failure
from conch.backends.redis.share_scripts import Entry
from conch.backends.redis.steps import LockKeys, Outcome, ScriptArgs, ScriptCall
from conch.errors import NotStarted
from conch.url import BackendURL

log = logging.getLogger("conch")
TRANSIENT = (RedisConnectionError, RedisTimeoutError)
RedisHold = TtlHold[LockKeys]
EntryHold = TtlHold[Entry]
T = TypeVar("T")


class RedisSession:
    """Three pools, by how long a reply may take: steps (``socket_timeout``), renewals
    (at most a beat) and waits (a ``BLPOP`` of up to one TTL)."""

    def __init__(self, url: BackendURL, options: RedisOptions) -> None:
        self.url, self.options, self.closed = url, options, False
        self.commands = options.client(options.socket_timeout)
        self._renewals = options.client(min(options.socket_timeout, options.ttl / 3))
        self._waits = options.client(options.ttl + options.socket_timeout)
        self.scripts = {source: self.commands.register_script(source)
                         for source in (*steps.SCRIPTS, *share_scripts.SCRIPTS)}
        self.ttl, self.entries = self._new_ttl_sessions()
        # One pinned connection of the steps' pool, for one thread at a time (docs/redis.md).
        self._pinned: redis.Redis | None = None
        self._pinned_idle = threading.Lock()
        forget_in_child(self)

    def _new_ttl_sessions(self) -> tuple[TtlSession[LockKeys], TtlSession[Entry]]:
        ttl, failures = self.options.ttl, (RedisError,)
        return (TtlSession("redis", ttl, self._renew, self.describe, failures),
                TtlSession("redis", ttl, self._renew_entries, self.describe, failures))

    def forget_parent(self) -> None:
        """In a forked child: drop the parent's holds and renewal threads (not its pools)."""
        self.ttl, self.entries = self._new_ttl_sessions()
        self._pinned, self._pinned_idle = None, threading.Lock()
        if not self.closed:
            self.ttl.start()
            self.entries.start()

    def describe(self, exc: BaseException) -> str:
        return describe(self.url, self.options, exc)

    def start(self) -> None:
        """Check the server answers (loading the lock scripts), then start renewing."""
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
        self.entries.start()

    def close(self) -> None:
        """Stop renewing (reporting every hold lost) and close every connection."""
        self.closed = True
        self.ttl.stop()
        self.entries.stop()
        for client in (self.commands, self._renewals, self._waits):
            _interrupt(client.connection_pool)
        # Held from now on: later steps (an abandon) take a connection of the pool.
        idle = self._pinned_idle.acquire(timeout=self.options.socket_timeout)
        if idle and self._pinned is not None:
            self._pinned.close()  # back to the pool, idle: nobody reads it, closed safely
            self.commands.connection_pool.disconnect(inuse_connections=False)

    def check_open(self) -> None:
        if self.closed:
            raise NotStarted("the coordinator of this lock was stopped")

    def calls(self) -> contextlib.AbstractContextManager[None]:
        """Redis errors in the block leave as :class:`BackendUnavailable`."""
        self.check_open()
        return translated(self.url, (RedisError,), self.describe)

    def try_acquire(self, keys: LockKeys, value: bytes, retrying: bool = False) -> Outcome:
        """One attempt to hold ``keys`` with ``value``: ``(token, 0)``, or ``(None, seconds)``
        until the holder's TTL ends. Whatever fails, nothing is left held."""
        self.check_open()
        options = self.options
        try:  # flat, and EVALSHA without redis-py's Script wrapper: the uncontended path
            reply = self._run(steps.acquire_call(keys, value, options.ttl_ms, retrying),
                              steps.acquire_call(keys, value, options.ttl_ms, True))
            outcome = steps.acquire_outcome(reply, options.ttl)
            if outcome[0] is not None and options.wait_replicas:
                steps.check_replicas(self._waits.wait(options.wait_replicas,
                                                      options.ttl_ms // 3), options)
            return outcome
        except BaseException as exc:
            self._failed(keys, value, exc)

    def wait_and_try(self, keys: LockKeys, seconds: float,
                     value: bytes) -> tuple[Outcome, bytes | None]:
        """``BLPOP`` on ``keys.wake`` for up to ``seconds``, then :meth:`try_acquire` in the
        same round-trip (anew after a broken wait); and the signal the wait took, if any."""
        self.check_open()
        try:
            replies = self._wait_then(keys.wake, seconds, steps.acquire_call(
                keys, value, self.options.ttl_ms, False))
        except TRANSIENT:
            if self.closed:  # stop() ended the wait: free what the attempt may hold
                self.abandon(steps.release_call(keys, value))
            return self.try_acquire(keys, value, retrying=True), None
        except BaseException as exc:
            self._failed(keys, value, exc)
        outcome, signal = steps.outcome_after_wait(replies, self.options)
        return outcome or self.try_acquire(keys, value, retrying=True), signal

    def _failed(self, keys: LockKeys, value: bytes, exc: BaseException) -> NoReturn:
        """Free what a failed attempt with ``value`` may hold, then raise ``exc`` (a Redis
        error as :class:`BackendUnavailable`)."""
        self.abandon(steps.release_call(keys, value))
        if isinstance(exc, RedisError):
            raise unavailable(self.url, self.describe(exc)) from None
        raise exc

    def release(self, hold: RedisHold) -> None:
        """Stop renewing ``hold`` and free its lock, waking one waiter."""
        self.ttl.discard(hold)
        call = steps.release_call(hold.keys, hold.value)
        if self.closed:  # granted as the coordinator stopped: free it all the same
            self.abandon(call)
            return
        try:
            released = self._run(call, call)
        except RedisError as exc:
            raise unavailable(self.url, self.describe(exc)) from None
        steps.check_released(hold.keys, released)

    def register(self, *sources: str) -> None:
        """Register more scripts for :meth:`run` (the groups')."""
        self.scripts.update((source, self.commands.register_script(source)) for source in sources)

    def run(self, call: ScriptCall, idempotent: bool = True) -> Any:
        """Run a script (again after a connection failure, if ``idempotent``)."""
        with self.calls():
            return self._run(call, call if idempotent else None)

    def wait_and_run(self, wake_list: bytes, seconds: float, call: ScriptCall) -> Any:
        """``BLPOP`` on ``wake_list`` for at most ``seconds``, then the script in the same
        round-trip. A broken connection ends the wait early; then the script runs anew."""
        with self.calls():
            try:
                replies = self._wait_then(wake_list, seconds, call)
            except TRANSIENT:
                replies = None
        return self.run(call) if replies is None else replies[1]

    def abandon(self, call: ScriptCall) -> None:
        """Best effort, even once closed: free what an attempt may hold (else it expires)."""
        try:
            self._run(call, call)
        except RedisError:
            log.warning("could not free %s; it expires within the TTL", call[1][0].decode())
        finally:
            if self.closed:  # another thread's abandon may be using one still
                self.commands.connection_pool.disconnect(inuse_connections=False)

    def _wait_then(self, wake_list: bytes, seconds: float, call: ScriptCall) -> list[Any] | None:
        """``BLPOP`` then ``call`` in one pipeline: both replies (:func:`steps.checked`)."""
        source, keys, args = call
        pipeline = self._waits.pipeline(transaction=False)  # execute() returns its connection
        pipeline.blpop([wake_list], seconds)
        pipeline.evalsha(self.scripts[source].sha, len(keys), *keys, *args)
        return steps.checked(pipeline.execute(False))

    def _run(self, call: ScriptCall, retry: ScriptCall | None = None) -> Any:
        """``EVALSHA`` of ``call`` on the pinned connection (one of the pool while another
        thread uses it); ``retry`` once after a connection failure, if given."""
        try:
            if not self._pinned_idle.acquire(blocking=False):
                return self._evalsha(self.commands, call)
            pinned = self._pinned
            try:
                if pinned is None:
                    pinned = self._pinned = redis.Redis(
                        connection_pool=self.commands.connection_pool,
                        single_connection_client=True)
                return self._evalsha(pinned, call)
            except TRANSIENT:
                # Back to the pool, which reconnects it (under Sentinel: to the new master).
                if pinned is not None:
                    pinned.close()
                self._pinned = None
                raise
            finally:
                self._pinned_idle.release()
        except TRANSIENT:
            if retry is None:
                raise
            return self._run(retry)

    def _evalsha(self, client: redis.Redis, call: ScriptCall) -> Any:
        """``EVALSHA`` of ``call``, loading the script again if the server lost it."""
        source, keys, args = call
        try:
            return client.evalsha(self.scripts[source].sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(source)
            return client.evalsha(self.scripts[source].sha, len(keys), *keys, *args)

    def renew(self, source: str, keys: Sequence[bytes], args: ScriptArgs) -> list[bool]:
        """A renewal script on the renewals' pool (its reply timeout is at most a beat)."""
        return [bool(renewed) for renewed in self._evalsha(self._renewals, (source, keys, args))]

    def _renew(self, holds: list[RedisHold], within: float) -> list[bool]:
        return self.renew(steps.RENEW, [hold.keys.holder for hold in holds],
                          [self.options.ttl_ms, *(hold.value for hold in holds)])

    def _renew_entries(self, holds: list[EntryHold], within: float) -> list[bool]:
        keys: list[bytes] = []
        args: list[bytes | int] = [self.options.ttl_ms]
        for hold in holds:
            keys += [hold.keys.entries, hold.keys.guard]
            args += [hold.value, hold.keys.guard_value]
        return self.renew(share_scripts.RENEW_ENTRIES, keys, args)


def retry_once(call: Callable[[bool], T]) -> T:
    """``call(False)``, then ``call(True)`` after a connection failure: idempotent steps."""
    try:
        return call(False)
    except TRANSIENT:
        return call(True)


def _interrupt(pool: redis.ConnectionPool) -> None:
    """Close the idle connections and shut down those in use (a ``BLPOP``), so that their
    readers wake at once, under eventlet too (the shim: docs/redis.md)."""
    for connection in list(getattr(pool, "_in_use_connections", ())):
        with contextlib.suppress(OSError, AttributeError):
            connection._sock.shutdown(socket.SHUT_RDWR)
    pool.disconnect(inuse_connections=False)
