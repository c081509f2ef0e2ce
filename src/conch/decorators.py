"""``synchronized``: run a function while holding a lock named from its arguments."""

from __future__ import annotations

import functools
import inspect
import logging
import string
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from conch.aio.coordinator import AsyncCoordinator
from conch.coordinator import Coordinator
from conch.defaults import default_coordinator
from conch.errors import LockAcquireFailed
from conch.lock import Blocking, LockName, wait_budget

log = logging.getLogger("conch")

F = TypeVar("F", bound=Callable[..., Any])


def synchronized(
    template: str,
    blocking: Blocking = True,
    coordinator: Coordinator | AsyncCoordinator | None = None,
) -> Callable[[F], F]:
    """Decorate a function (plain or ``async def``) to run while holding a lock.

    The lock name is ``template`` formatted with the call's arguments (bound by
    name, defaults applied) and ``f_name``, the function's name, e.g.
    ``"{f_name}-{vnf.id}"``. A template field that is not a parameter raises
    ``ValueError`` when decorating. ``blocking`` is as for ``Lock.acquire``; not
    acquired in time raises :class:`conch.LockAcquireFailed`. ``coordinator=None``
    uses the process default (``CONCH_URL``, else a per-user ``file://`` directory).
    A coroutine function waits through :mod:`conch.aio`, without blocking its event
    loop and without a thread per waiting call; either kind of coordinator serves
    either kind of function. Wait and hold times are logged at DEBUG on the
    ``conch`` logger; metrics are labelled with ``template``, not the formatted name.
    """
    wait_budget(blocking)

    def decorate(func: F) -> F:
        name_of = _lock_namer(template, func)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                lock = _async_coordinator(coordinator).lock(name_of(args, kwargs), template)
                started = time.monotonic()
                if not await lock.acquire(blocking):
                    raise _not_acquired(lock.name, func, blocking)
                acquired = _log_acquired(lock.name, func, started)
                try:
                    return await func(*args, **kwargs)
                finally:
                    try:
                        await lock.release()
                    finally:
                        _log_released(lock.name, func, acquired)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            lock = _sync_coordinator(coordinator).lock(name_of(args, kwargs), template)
            started = time.monotonic()
            if not lock.acquire(blocking):
                raise _not_acquired(lock.name, func, blocking)
            acquired = _log_acquired(lock.name, func, started)
            try:
                return func(*args, **kwargs)
            finally:
                try:
                    lock.release()
                finally:
                    _log_released(lock.name, func, acquired)

        return cast(F, run)

    return decorate


def _sync_coordinator(given: Coordinator | AsyncCoordinator | None) -> Coordinator:
    if given is None:
        return default_coordinator()
    return given.coordinator if isinstance(given, AsyncCoordinator) else given


def _async_coordinator(given: Coordinator | AsyncCoordinator | None) -> AsyncCoordinator:
    if isinstance(given, AsyncCoordinator):
        return given
    # One AsyncCoordinator per coordinator, so concurrent calls share its wait queues.
    return AsyncCoordinator.sharing(given or default_coordinator())


def _lock_namer(
    template: str, func: Callable[..., Any]
) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
    """Check ``template`` against ``func``'s parameters; return the name builder."""
    signature = inspect.signature(func)
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        root = field.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise ValueError(f"lock template {template!r} must name its fields, as {{vnf.id}}")
        if root != "f_name" and root not in signature.parameters:
            raise ValueError(
                f"lock template {template!r} uses {root!r}, which is not a parameter of "
                f"{func.__qualname__}{signature}"
            )

    def name_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return template.format_map({"f_name": func.__name__, **bound.arguments})

    return name_of


def _not_acquired(
    name: LockName, func: Callable[..., Any], blocking: Blocking
) -> LockAcquireFailed:
    waited = "at once" if blocking is False else f"within {blocking} s"
    return LockAcquireFailed(f"{func.__qualname__}: lock {name!r} not acquired {waited}")


def _log_acquired(name: LockName, func: Callable[..., Any], started: float) -> float:
    acquired = time.monotonic()
    log.debug("lock %r acquired by %s after waiting %.6f s",
              name, func.__qualname__, acquired - started)
    return acquired


def _log_released(name: LockName, func: Callable[..., Any], acquired: float) -> None:
    log.debug("lock %r released by %s after holding %.6f s",
              name, func.__qualname__, time.monotonic() - acquired)
