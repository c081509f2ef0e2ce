"""The ``redis://`` blocking lock handle: ACQUIRE, and while the lock is busy ``BLPOP`` on
the name's wake list (until a release or the holder's TTL ends), then again."""

from __future__ import annotations

import time

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.kit.ttl import new_hold_value
from conch.backends.redis.session import RedisHold, RedisSession
from conch.backends.redis.steps import LockKeys, Turns, wait_seconds
from conch.introspection import HolderStamp


class RedisLock(LockHandle):
    """One lock object's hold on a Redis lock."""

    def __init__(self, session: RedisSession, keys: LockKeys, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._session, self._keys, self._stamp, self._on_lost = session, keys, stamp, on_lost
        self._hold: RedisHold | None = None
        self._turns = Turns()

    def acquire(self, deadline: Deadline) -> int | None:
        session, ttl, turns = self._session, self._session.options.ttl, self._turns
        value, sent = new_hold_value(self._stamp), time.monotonic()
        signal = None
        if (seconds := turns.first_wait(deadline, ttl)) is None:
            token, busy_for = session.try_acquire(self._keys, value)
        else:
            (token, busy_for), signal = session.wait_and_try(self._keys, seconds, value)
        met_holder = token is None
        while token is None:
            if (seconds := wait_seconds(busy_for, deadline, ttl)) is None:
                return None
            value, sent = new_hold_value(self._stamp), time.monotonic()
            (token, busy_for), _ = session.wait_and_try(self._keys, seconds, value)
        turns.acquired(met_holder, signal)
        self._hold = session.ttl.keep(self._keys, value, sent, self._on_lost)
        return token

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._session.release(hold)
            self._turns.released(hold.value)
