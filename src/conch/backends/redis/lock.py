"""The ``redis://`` blocking lock handle: ACQUIRE, and while the lock is busy ``BLPOP`` on
the name's wake list until a release signals it or the holder's TTL ends, then again."""

from __future__ import annotations

from conch.backends.base import Deadline, LockHandle, LossCallback
from conch.backends.redis.session import RedisHold, RedisSession
from conch.backends.redis.steps import Acquisition, LockKeys
from conch.introspection import HolderStamp


class RedisLock(LockHandle):
    """One lock object's hold on a Redis lock."""

    def __init__(self, session: RedisSession, keys: LockKeys, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._session = session
        self._keys = keys
        self._stamp = stamp
        self._on_lost = on_lost
        self._hold: RedisHold | None = None

    def acquire(self, deadline: Deadline) -> int | None:
        session = self._session
        attempt = Acquisition(self._stamp, deadline, session.options.ttl)
        while True:
            token, busy_for = session.try_acquire(self._keys, attempt.next_value())
            if token is not None:
                self._hold = session.ttl.keep(self._keys, attempt.value, attempt.sent,
                                              self._on_lost)
                return token
            seconds = attempt.wait_for(busy_for)
            if seconds is None:
                return None
            session.wait(self._keys, seconds)

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self._session.release(hold)
