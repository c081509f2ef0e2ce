"""After ``fork()``: a child must not use its parent's connections, sessions, threads or
locks. An object registered here gets its ``forget_parent()`` called in each forked
child, in registration order, for as long as it is alive; nothing runs in the parent.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol


class ForkAware(Protocol):
    """What a registered object implements."""

    def forget_parent(self) -> None:
        """In a forked child: drop what belongs to the parent without touching it (close
        no socket the parent still uses; replace mutexes the parent may have held)."""


_registered: list[weakref.ref[ForkAware]] = []
_mutex = threading.Lock()


def forget_in_child(obj: ForkAware) -> None:
    """Call ``obj.forget_parent()`` in every child forked while ``obj`` is alive."""
    with _mutex:
        _registered[:] = [ref for ref in _registered if ref() is not None]
        _registered.append(weakref.ref(obj))


def _after_fork_in_child() -> None:
    global _mutex
    _mutex = threading.Lock()  # the parent may have held it while forking
    for ref in list(_registered):
        obj = ref()
        if obj is not None:
            obj.forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)
