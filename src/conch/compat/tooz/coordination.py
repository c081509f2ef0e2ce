"""``tooz.coordination``: :func:`get_coordinator` and the names tooz's module offers.

``get_coordinator(backend_url, member_id)`` takes tooz URLs (see
:mod:`conch.compat.tooz.urls`) and conch URLs, and returns a coordinator whose class has
the name of tooz's driver for the URL (:mod:`conch.compat.tooz.drivers`); the coordinator
itself is :class:`CoordinationDriver` (:mod:`conch.compat.tooz.driver`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conch.compat.tooz.driver import Characteristics, CoordinationDriver
from conch.compat.tooz.drivers import driver_class
from conch.compat.tooz.errors import (
    GroupAlreadyExist,
    GroupNotCreated,
    GroupNotEmpty,
    LockAcquireFailed,
    LockLost,
    MemberAlreadyExist,
    MemberNotJoined,
    NotImplemented,
    OperationTimedOut,
    SerializationError,
    ToozConnectionError,
    ToozDriverChosenPoorly,
    ToozError,
    WatchCallbackNotFound,
)
from conch.compat.tooz.results import CoordAsyncResult, CoordinatorResult
from conch.compat.tooz.urls import to_conch_url
from conch.compat.tooz.watchers import (
    Event,
    Hooks,
    LeaderElected,
    MemberJoinedGroup,
    MemberLeftGroup,
)

__all__ = [
    "Characteristics",
    "CoordAsyncResult",
    "CoordinationDriver",
    "CoordinatorResult",
    "Event",
    "GroupAlreadyExist",
    "GroupNotCreated",
    "GroupNotEmpty",
    "Hooks",
    "LeaderElected",
    "LockAcquireFailed",
    "LockLost",
    "MemberAlreadyExist",
    "MemberJoinedGroup",
    "MemberLeftGroup",
    "MemberNotJoined",
    "NotImplemented",
    "OperationTimedOut",
    "SerializationError",
    "ToozConnectionError",
    "ToozDriverChosenPoorly",
    "ToozError",
    "WatchCallbackNotFound",
    "get_coordinator",
]


def get_coordinator(
    backend_url: str,
    member_id: bytes | str,
    characteristics: Iterable[Characteristics] | None = frozenset(),
    **kwargs: Any,
) -> CoordinationDriver:
    """A coordinator (not started) for ``backend_url``, a tooz or conch URL.

    ``kwargs`` override the URL's query options, as in tooz. Raises
    :class:`conch.InvalidURL` for a malformed URL or an option conch cannot honour, and
    :class:`ToozDriverChosenPoorly` when the backend lacks a wanted characteristic.
    """
    url = to_conch_url(backend_url, kwargs)
    coordinator = driver_class(url.partition("://")[0].lower())(url, member_id)
    missing = set(characteristics or ()) - set(coordinator.CHARACTERISTICS)
    if missing:
        raise ToozDriverChosenPoorly(
            f"the {coordinator._scheme} backend lacks "
            f"{', '.join(sorted(item.value for item in missing))} (it has "
            f"{', '.join(item.value for item in coordinator.CHARACTERISTICS)})"
        )
    return coordinator
