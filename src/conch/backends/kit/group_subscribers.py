"""The subscribers of a coordinator's groups, and the one thread hearing a server's pushed
changes for all of them (docs/kit.md, "Group subscribers")."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

Changed = Callable[[], None]
Wake = Callable[[Collection[bytes] | None], None]
"""Wakes the subscribers of the groups given (``None``: of every group)."""


class GroupSubscribers:
    """Subscribers by group key, and a thread running ``listen(stopped, wake)`` (which must
    never fail) from the first subscriber on; without ``listen``, the backend wakes them."""

    def __init__(self, thread_name: str = "",
                 listen: Callable[[threading.Event, Wake], None] | None = None) -> None:
        self._thread_name, self._listen = thread_name, listen
        self._mutex = threading.Lock()
        self._subscribers: dict[bytes, list[Changed]] = {}
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, group: bytes, changed: Changed) -> Changed:
        """Call ``changed`` when ``group`` changes (never fails); returns the way to stop."""
        with self._mutex:
            self._subscribers.setdefault(group, []).append(changed)
            if self._listen and self._thread is None and not self.stopped.is_set():
                self._thread = threading.Thread(target=self._listen, daemon=True,
                                                args=(self.stopped, self.wake),
                                                name=self._thread_name)
                self._thread.start()

        def unsubscribe() -> None:
            with self._mutex:
                subscribers = self._subscribers.get(group, [])
                if changed in subscribers:
                    subscribers.remove(changed)
        return unsubscribe

    def stop(self) -> None:
        """Tell the thread to end (``listen`` returns once it sees ``stopped``)."""
        self.stopped.set()

    def forget_parent(self) -> None:
        """In a forked child: the next :meth:`subscribe` starts a thread of its own."""
        self._mutex = threading.Lock()
        self._thread = None

    def wake(self, groups: Collection[bytes] | None) -> None:
        """Call the subscribers of ``groups`` (``None``: of every group)."""
        with self._mutex:
            woken = [changed for group, subscribers in self._subscribers.items()
                     if groups is None or group in groups for changed in subscribers]
        for changed in woken:
            changed()
