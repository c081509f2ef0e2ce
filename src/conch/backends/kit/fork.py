"""After ``fork()``: each live registered object's ``forget_parent()`` runs in the child, in
registration order, so that it uses none of its parent's connections, threads or locks."""

from __future__ import annotations

import itertools
import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    """What a registered object implements."""

    def forget_parent(self) -> None:
        """In a forked child: drop the parent's connections unclosed, replace its mutexes."""


_registered: weakref.WeakValueDictionary[int, ForkAware] = weakref.WeakValueDictionary()
_registration_numbers = itertools.count()


def forget_in_child(obj: ForkAware) -> None:
    """Call ``obj.forget_parent()`` in every child forked while ``obj`` is alive."""
    _registered[next(_registration_numbers)] = obj


def _after_fork_in_child() -> None:
    for obj in list(_registered.values()):
        obj.forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)
