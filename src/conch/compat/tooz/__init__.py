"""tooz 9's public API on conch — for code written against tooz: locks, groups, watchers,
leader election, the partitioner and the hash ring.

``import conch.compat.tooz as tooz`` (or :func:`install_as_tooz` before anything imports
tooz); ``get_coordinator`` takes the service's tooz URL or a conch URL. README, "Switching
from tooz"."""

from __future__ import annotations

import sys

from conch.compat.tooz import coordination, drivers, hashring, locking, partitioner, utils
from conch.compat.tooz.errors import NotImplemented, ToozError

__all__ = ["NotImplemented", "ToozError", "coordination", "drivers", "hashring",
           "install_as_tooz", "locking", "partitioner", "utils"]

_MODULES = {"coordination": coordination, "drivers": drivers, "hashring": hashring,
            "locking": locking, "partitioner": partitioner, "utils": utils,
            **{module.__name__.partition(".tooz.")[2]: module for module in drivers.MODULES}}


def install_as_tooz() -> None:
    """Make ``import tooz`` and its modules (``tooz.coordination``, ``tooz.locking``,
    ``tooz.hashring``, ``tooz.partitioner``, ``tooz.utils``, ``tooz.drivers.<name>``) these.

    Call it first thing (before any module imports tooz), e.g. in the service's entry
    point. Raises ``RuntimeError`` when the real tooz is already imported: modules holding
    it would keep using it, and two lock implementations would not exclude each other.
    """
    package = sys.modules[__name__]
    current = sys.modules.get("tooz")
    if current is package:
        return
    if current is not None:
        raise RuntimeError(
            "install_as_tooz() must run before tooz is imported: tooz is already loaded "
            f"from {getattr(current, '__file__', '?')}"
        )
    sys.modules["tooz"] = package
    for name, module in _MODULES.items():
        sys.modules[f"tooz.{name}"] = module
