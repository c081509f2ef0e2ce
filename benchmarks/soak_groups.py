"""The soak's group check: every worker joins one group; an observer in the soak's process
watches it through every fault and checks that the events it is told are consistent (no
member joins twice or leaves without having joined) and that once the workers are gone
the group empties within the backend's lease."""

from __future__ import annotations

import os
import time

from tests.chaos.worker import GROUP_ENV

import conch

SETTLE_MARGIN = 10.0
"""Seconds beyond the lease and poll interval for the group to empty after the last worker."""


class GroupObserver:
    """Watches the soak's group from the soak's process and collects violations."""

    def __init__(self, url: str, group: str, lease: float | None) -> None:
        self.violations: list[str] = []
        self.events = 0
        self._view: set[str] = set()
        self._lease = lease or 0.0
        self._coordinator = conch.connect(url)
        self._group = self._coordinator.group(group)
        self._group.watch(self._record)
        os.environ[GROUP_ENV] = group  # the workers spawned from now on join it

    def _record(self, event: conch.GroupEvent) -> None:
        self.events += 1
        if event.joined & self._view:
            self.violations.append(f"told {sorted(event.joined & self._view)} joined twice")
        if event.left - self._view:
            self.violations.append(f"told {sorted(event.left - self._view)} left unseen")
        self._view = (self._view | event.joined) - event.left

    def finish(self) -> list[str]:
        """After the last worker ended: the group must empty; the violations found."""
        os.environ.pop(GROUP_ENV, None)
        poll = self._group.poll_interval if self._group.poll_interval < 30 else 0.0
        deadline = time.monotonic() + self._lease + poll + SETTLE_MARGIN
        members: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                members = self._group.members()
            except conch.ConchError:
                members = {"(unreadable)": None}
            if not members and not self._view:
                break
            time.sleep(0.5)
        else:
            self.violations.append(f"members {sorted(members)} (told {sorted(self._view)}) "
                                   "still listed after every worker ended")
        self._coordinator.stop()
        return self.violations
