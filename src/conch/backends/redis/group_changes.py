"""The ``redis://`` group changes a coordinator hears: one pub/sub connection, opened by the
first watched group, on the channel where joins, leaves and prunes name their group; each
message wakes that group's watching threads. After a lost connection it subscribes again
and wakes them all (what was published meanwhile is lost; their next read sees it)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

log = logging.getLogger("conch")
READ_SLICE = 1.0
"""Seconds one read of the channel waits: how long the thread may outlive :meth:`stop`."""
RECONNECT_PAUSE = 0.5
"""Seconds between two attempts to subscribe again while the server does not answer."""


class GroupChanges:
    """The subscribers of each group (by digest) and the thread that tells them."""

    def __init__(self, client: redis.Redis, channel: bytes) -> None:
        self._client, self._channel = client, channel
        self._mutex = threading.Lock()
        self._subscribers: dict[bytes, list[Callable[[], None]]] = {}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, digest: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed`` when group ``digest`` changes; returns the way to stop. Never
        fails: the thread subscribes, and keeps trying while the server is away."""
        with self._mutex:
            self._subscribers.setdefault(digest, []).append(changed)
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._listen, daemon=True,
                                                name="conch-redis-group-changes")
                self._thread.start()

        def unsubscribe() -> None:
            with self._mutex:
                subscribers = self._subscribers.get(digest, [])
                if changed in subscribers:
                    subscribers.remove(changed)
        return unsubscribe

    def stop(self) -> None:
        """End the thread (within :data:`READ_SLICE`; the session's close ends its read at
        once)."""
        self._stopped.set()

    def _listen(self) -> None:
        pubsub: redis.client.PubSub | None = None
        while not self._stopped.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self._channel)
                    self._wake(None)  # changes published while unsubscribed were missed
                message = pubsub.get_message(timeout=READ_SLICE)
                if message is not None and message["type"] == "message":
                    self._wake(message["data"])
            except (RedisError, OSError) as exc:
                if self._stopped.is_set():
                    break
                log.debug("conch: redis group changes: %s; subscribing again", exc)
                _closed(pubsub)
                pubsub = None
                self._stopped.wait(RECONNECT_PAUSE)
        _closed(pubsub)

    def _wake(self, digest: bytes | None) -> None:
        """Call the subscribers of group ``digest`` (``None``: of every group)."""
        with self._mutex:
            woken = [changed for group, subscribers in self._subscribers.items()
                     if digest is None or group == digest for changed in subscribers]
        for changed in woken:
            changed()


def _closed(pubsub: redis.client.PubSub | None) -> None:
    """Close ``pubsub`` if any (its connection may be broken already)."""
    if pubsub is not None:
        with contextlib.suppress(RedisError, OSError):
            pubsub.close()
