"""The ``memcached://`` lock: ``add``, a fencing counter, compare-and-delete (docs/memcached.md)."""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
import weakref
from collections.abc import Iterator

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.ttl import TtlHold, new_hold_value
from conch.backends.memcached.client import (
    CLIENT_ERRORS,
    TRANSIENT,
    MemcachedClient,
    MemcachedSession,
    lock_keys,
)
from conch.errors import BackendUnavailable, ConchError, LockLost
from conch.introspection import HolderStamp

log = logging.getLogger("conch")
EPOCH_KEY, GRACE_KEY = b"conch:epoch", b"conch:grace"
GRACE_POLL = 0.05  # seconds between a waiter's tries during a restart grace period
Attempt = tuple[int | None, bytes | None, float]  # token, CAS id, 0 | None, None, least pause


def pauses() -> Iterator[float]:
    """One waiter's pauses, from 1 ms doubling up to 5 ms, each drawn from its upper half."""
    ceiling = 0.001
    while True:
        yield random.uniform(ceiling / 2, ceiling)
        ceiling = min(ceiling * 2, 0.005)


class Releases(threading.Condition):
    """The releases of one key in this process, while waiters watch it (compare, not count)."""

    count = 0

    def wait_since(self, seen: int, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or less if a release came since ``count`` was ``seen``."""
        with self:
            self.wait_for(lambda: self.count != seen, timeout)


class LocalReleases:
    """Per key waited for, its :class:`Releases` by any coordinator of this process."""

    def __init__(self) -> None:
        self.forget_parent()
        forget_in_child(self)

    def forget_parent(self) -> None:
        """A forked child has none of its parent's waiters (and maybe a held mutex)."""
        self._mutex = threading.Lock()
        self._watched = weakref.WeakValueDictionary[bytes, Releases]()

    def watch(self, key: bytes) -> Releases:
        """``key``'s releases, watched while the caller keeps them (from before it tries)."""
        with self._mutex:
            if (releases := self._watched.get(key)) is None:
                releases = self._watched[key] = Releases(self._mutex)
            return releases

    def released(self, key: bytes) -> None:
        with self._mutex:
            if (releases := self._watched.get(key)) is not None:
                releases.count += 1
                releases.notify_all()


LOCAL_RELEASES = LocalReleases()


class MemcachedLock(LockHandle):
    """One lock of a coordinator, borrowing its session (``kind``: see :func:`lock_keys`)."""

    def __init__(self, session: MemcachedSession, name: bytes, member_id: str,
                 on_lost: LossCallback, kind: bytes = b"") -> None:
        self._session, self._keys, self._on_lost = session, lock_keys(name, kind), on_lost
        self._stamp = HolderStamp(name, member_id)
        self._signal = f"{session.options.where} ".encode() + self._keys.holder  # per server
        self._hold: TtlHold[bytes] | None = None
        self._cas: bytes | None = None  # the holder key's CAS id when taken, if known
        self._id = secrets.token_hex(16)  # in the name of its key of its own, where it has one

    def acquire(self, deadline: Deadline) -> int | None:
        waiting, releases = pauses(), LOCAL_RELEASES.watch(self._signal)
        while True:
            # A new value per attempt: the stamp tells when the hold began.
            value, seen, sent = new_hold_value(self._stamp), releases.count, time.monotonic()
            token, self._cas, at_least = self._try_acquire(value)
            if token is not None:
                self._hold = self._session.ttl.keep(self._keys.holder, value, sent,
                                                    self._on_lost)
                return token
            remaining = deadline.remaining()
            if remaining == 0:
                return None
            pause = max(next(waiting), at_least)
            releases.wait_since(seen, pause if remaining is None else min(pause, remaining))

    def _try_acquire(self, value: bytes) -> Attempt:
        """One :meth:`_take` (retried after a lost reply), leaving nothing held if it fails."""
        session, keys = self._session, self._keys
        session.check_open()
        with session.translated():
            try:
                return session.run(lambda client, retried: self._take(client, value, retried))
            except TRANSIENT:
                raise  # twice unreachable: what the add may have stored expires within the TTL
            except BaseException:
                try:
                    session.run(lambda client, _: client.free(keys.holder, value))
                except (*CLIENT_ERRORS, ConchError):
                    log.warning("could not free lock key %s after a failed acquire; it "
                                "expires within the TTL", keys.holder.decode())
                raise

    def _take(self, client: MemcachedClient, value: bytes, retried: bool) -> Attempt:
        """Hold the key with ``value`` (``retried``: the last try may have stored it)."""
        cas = client.add_with_cas(self._keys.holder, value, self._session.options.ttl)
        if cas is None and not (retried and client.get(self._keys.holder) == value):
            return None, None, 0.0
        return self._fenced(client, value, cas)

    def _fenced(self, client: MemcachedClient, value: bytes, cas: bytes | None = None) -> Attempt:
        """The token of a hold just taken (``cas``: its CAS id); in a restart grace, none."""
        counter, options = self._keys.counter, self._session.options
        token = client.incr(counter, 1)
        if token is None:  # a new name, an eviction, or a server that lost its state
            if self._in_grace(client):  # hold nothing until it ends
                client.free(self._keys.holder, value, cas)
                return None, None, GRACE_POLL
            client.add(counter, str(time.time_ns() // 1000).encode(), expire=0)
            if (token := client.incr(counter, 1)) is None:
                raise BackendUnavailable(f"memcached at {options.where} evicts the fencing "
                                         "counter as soon as it is stored: give it more memory")
        return int(token), cas, 0.0

    def _in_grace(self, client: MemcachedClient) -> bool:
        """Whether the server may still have holders from before it lost its state."""
        found, options = client.get_many([EPOCH_KEY, GRACE_KEY]), self._session.options
        if EPOCH_KEY not in found:
            # Grace first: whoever sees the epoch then sees the grace key until it expires.
            client.add(GRACE_KEY, b"restart", expire=options.ttl)
            client.add(EPOCH_KEY, str(time.time_ns() // 1000).encode(), expire=0)
            log.warning("memcached at %s lost its state (restart, flush, or first use): no "
                        "lock is granted for %d s", options.where, options.ttl)
        return GRACE_KEY in found or EPOCH_KEY not in found

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        self._session.ttl.discard(hold)
        # The CAS id of the add only within the lease: a restarted server numbers them
        # afresh, but grants this key to no one before the lease ends (restart grace).
        cas = self._cas if time.monotonic() < hold.valid_until else None
        try:
            with self._session.translated():
                # After a lost reply the key may be gone because our own delete ran.
                freed = self._session.run(
                    lambda client, retried: client.free(hold.keys, hold.value, cas) or retried)
        finally:
            LOCAL_RELEASES.released(self._signal)
        if not freed:
            raise LockLost(f"lock key {hold.keys.decode()} had expired or changed holder "
                           "before its release")
