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

from conch.backends.kit.group_subscribers import GroupSubscribers, Wake

log = logging.getLogger("conch")
READ_SLICE = 1.0
"""Seconds one read of the channel waits: how long the thread may outlive :meth:`stop`."""
RECONNECT_PAUSE = 0.5
"""Seconds between two attempts to subscribe again while the server does not answer."""


class GroupChanges:
    """The subscribers of each group (by digest) and the thread that tells them."""

    def __init__(self, client: redis.Redis, channel: bytes) -> None:
        self._client, self._channel = client, channel
        self._subscribers = GroupSubscribers("conch-redis-group-changes", self._listen)

    def subscribe(self, digest: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed`` when group ``digest`` changes; returns the way to stop. Never
        fails: the thread subscribes, and keeps trying while the server is away."""
        return self._subscribers.subscribe(digest, changed)

    def stop(self) -> None:
        """End the thread (within :data:`READ_SLICE`; the session's close ends its read at
        once)."""
        self._subscribers.stop()

    def _listen(self, stopped: threading.Event, wake: Wake) -> None:
        pubsub: redis.client.PubSub | None = None
        while not stopped.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self._channel)
                    wake(None)  # changes published while unsubscribed were missed
                message = pubsub.get_message(timeout=READ_SLICE)
                if message is not None and message["type"] == "message":
                    wake((message["data"],))
            except (RedisError, OSError) as exc:
                if stopped.is_set():
                    break
                log.debug("conch: redis group changes: %s; subscribing again", exc)
                _closed(pubsub)
                pubsub = None
                stopped.wait(RECONNECT_PAUSE)
        _closed(pubsub)


def _closed(pubsub: redis.client.PubSub | None) -> None:
    """Close ``pubsub`` if any (its connection may be broken already)."""
    if pubsub is not None:
        with contextlib.suppress(RedisError, OSError):
            pubsub.close()
