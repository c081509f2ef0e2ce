"""A group's background thread: reads its members when the backend pushes a change (or
every poll interval where it cannot), tells the group's watchers who joined and left, in
order, and re-joins a member the server dropped. A slow or failing watcher delays only its
own group; one thread per joined or watched group, reading members only while watched."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from conch.errors import ConchError
from conch.group_entry import MemberInfo

log = logging.getLogger("conch")


@dataclasses.dataclass(frozen=True)
class GroupEvent:
    """A change of a group's members: who ``joined`` and who ``left`` since the last event,
    and every live member's capabilities after it."""

    group: str | bytes
    joined: frozenset[str]
    left: frozenset[str]
    members: Mapping[str, Any]


Watcher = Callable[[GroupEvent], object]


class Subscription:
    """A watcher's registration: :meth:`cancel` stops its calls (at once, except a call
    already running)."""

    def __init__(self, watchers: list[Any], watcher: object, mutex: threading.Lock) -> None:
        self._watchers, self._watcher, self._mutex = watchers, watcher, mutex

    def cancel(self) -> None:
        """Stop calling the watcher; calling it twice is harmless."""
        with self._mutex:
            if self._watcher in self._watchers:
                self._watchers.remove(self._watcher)


class GroupThread:
    """The thread behind one group of one coordinator (see the module docstring).

    ``read`` gives the live members; ``subscribe`` asks the backend to call back on a change
    (returns how to stop); ``rejoin`` re-enters the group when it must and is called each
    round.
    """

    def __init__(self, group: str | bytes, read: Callable[[], dict[str, MemberInfo]],
                 subscribe: Callable[[Callable[[], None]], Callable[[], None]],
                 poll_interval: float, rejoin: Callable[[], None]) -> None:
        self._group, self._read, self._rejoin = group, read, rejoin
        self._poll_interval = poll_interval
        self._mutex = threading.Lock()
        self._watchers: list[Watcher] = []
        self._wake = threading.Event()
        self._stopping = False
        self._last: dict[str, MemberInfo] = {}
        self._unsubscribe = subscribe(self._wake.set)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"conch-group-{group!r}")
        self._thread.start()

    def watch(self, watcher: Watcher) -> Subscription:
        """Call ``watcher`` with each change from now on."""
        with self._mutex:
            if not self._watchers:  # the members are read only while someone watches
                self._last = self._read_quietly() or {}
            self._watchers.append(watcher)
        return Subscription(self._watchers, watcher, self._mutex)

    def wake(self) -> None:
        """Do a round now (a local join or leave, a loss to re-join)."""
        self._wake.set()

    def stop(self) -> None:
        """End the thread (waits for a watcher call in progress, unless called from one)."""
        self._stopping = True
        self._wake.set()
        self._unsubscribe()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            if self._stopping:
                return
            self._rejoin()
            with self._mutex:
                watched = bool(self._watchers)
            current = self._read_quietly() if watched else None
            if current is None:
                continue
            joined = frozenset(current.keys() - self._last.keys())
            left = frozenset(self._last.keys() - current.keys())
            self._last = current
            if joined or left:
                capabilities = {member: info.capabilities for member, info in current.items()}
                self._dispatch(GroupEvent(self._group, joined, left, capabilities))

    def _read_quietly(self) -> dict[str, MemberInfo] | None:
        try:
            return self._read()
        except ConchError as exc:
            log.warning("conch: reading group %r's members failed: %s", self._group, exc)
            return None

    def _dispatch(self, event: GroupEvent) -> None:
        with self._mutex:
            watchers = list(self._watchers)
        for watcher in watchers:
            try:
                watcher(event)
            except Exception:
                log.exception("conch: a watcher of group %r failed", self._group)
