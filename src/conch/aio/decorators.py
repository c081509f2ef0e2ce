"""``synchronized`` on a coroutine function (:func:`conch.synchronized` imports this module
by name when it decorates one): the wait goes through :mod:`conch.aio`."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

from conch.aio.coordinator import AsyncCoordinator
from conch.coordinator import Coordinator
from conch.decorators import (
    NameOf,
    Wrapping,
    log_acquired,
    log_released,
    not_acquired,
    sync_coordinator,
)
from conch.lock import Blocking


def synchronized_coroutine(
    func: Callable[..., Coroutine[Any, Any, Any]], name_of: NameOf, template: str,
    blocking: Blocking, coordinator: Coordinator | Wrapping | None,
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``func`` run while holding the lock ``name_of`` names for each call."""

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        lock = _async_coordinator(coordinator).lock(name_of(args, kwargs), template)
        started = time.monotonic()
        if not await lock.acquire(blocking):
            raise not_acquired(lock.name, func, blocking)
        acquired = log_acquired(lock.name, func, started)
        try:
            return await func(*args, **kwargs)
        finally:
            try:
                await lock.release()
            finally:
                log_released(lock.name, func, acquired)

    return run


def _async_coordinator(given: Coordinator | Wrapping | None) -> AsyncCoordinator:
    if isinstance(given, AsyncCoordinator):
        return given
    # One AsyncCoordinator per coordinator, so concurrent calls share its wait queues.
    return AsyncCoordinator.sharing(sync_coordinator(given))
