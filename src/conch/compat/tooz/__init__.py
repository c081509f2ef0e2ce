"""The lock part of tooz 9's public API, on conch — for code written against tooz.

``import conch.compat.tooz as tooz`` (or :func:`install_as_tooz` before anything imports
tooz); ``get_coordinator`` takes the service's tooz URL or a conch URL. Groups, leadership,
watchers and the partitioner raise :class:`NotImplemented`. README, "Switching from tooz"."""

from __future__ import annotations

import sys

from conch.compat.tooz import coordination, locking
from conch.compat.tooz.errors import NotImplemented, ToozError

__all__ = ["NotImplemented", "ToozError", "coordination", "install_as_tooz", "locking"]


def install_as_tooz() -> None:
    """Make ``import tooz``, ``tooz.coordination`` and ``tooz.locking`` these modules.

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
    sys.modules["tooz.coordination"] = coordination
    sys.modules["tooz.locking"] = locking
