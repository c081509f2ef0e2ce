"""``synchronized``: run a function while holding a lock named from its arguments."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import string
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from conch.coordinator import Coordinator
from conch.defaults import default_coordinator
from conch.errors import LockAcquireFailed
from conch.lock import Blocking, Lock, wait_budget

log = logging.getLogger("conch")

F = TypeVar("F", bound=Callable[..., Any])


def synchronized(
    template: str, blocking: Blocking = True, coordinator: Coordinator | None = None
) -> Callable[[F], F]:
    """Decorate a function (plain or ``async def``) to run while holding a lock.

    The lock name is ``template`` formatted with the call's arguments (bound by
    name, defaults applied) and ``f_name``, the function's name, e.g.
    ``"{f_name}-{vnf.id}"``. A template field that is not a parameter raises
    ``ValueError`` when decorating. ``blocking`` is as for ``Lock.acquire``; not
    acquired in time raises :class:`conch.LockAcquireFailed`. ``coordinator=None``
    uses the process default (``CONCH_URL``, else a per-user ``file://`` directory).
    Wait and hold times are logged at DEBUG on the ``conch`` logger.
    """
    wait_budget(blocking)

    def decorate(func: F) -> F:
        name_of = _lock_namer(template, func)

        def lock_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Lock:
            return (coordinator or default_coordinator()).lock(name_of(args, kwargs))

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                lock = lock_for(args, kwargs)
                started = time.monotonic()
                if not await _acquire_in_thread(lock, blocking):
                    raise _not_acquired(lock, func, blocking)
                acquired = _log_acquired(lock, func, started)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _release(lock, func, acquired)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            lock = lock_for(args, kwargs)
            started = time.monotonic()
            if not lock.acquire(blocking):
                raise _not_acquired(lock, func, blocking)
            acquired = _log_acquired(lock, func, started)
            try:
                return func(*args, **kwargs)
            finally:
                _release(lock, func, acquired)

        return cast(F, run)

    return decorate


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


def _not_acquired(lock: Lock, func: Callable[..., Any], blocking: Blocking) -> LockAcquireFailed:
    waited = "at once" if blocking is False else f"within {blocking} s"
    return LockAcquireFailed(f"{func.__qualname__}: lock {lock.name!r} not acquired {waited}")


def _log_acquired(lock: Lock, func: Callable[..., Any], started: float) -> float:
    acquired = time.monotonic()
    log.debug("lock %r acquired by %s after waiting %.6f s",
              lock.name, func.__qualname__, acquired - started)
    return acquired


def _release(lock: Lock, func: Callable[..., Any], acquired: float) -> None:
    try:
        lock.release()
    finally:
        log.debug("lock %r released by %s after holding %.6f s",
                  lock.name, func.__qualname__, time.monotonic() - acquired)


async def _acquire_in_thread(lock: Lock, blocking: Blocking) -> bool:
    """``lock.acquire(blocking)`` without blocking the event loop.

    The wait runs in its own thread (not the loop's bounded executor, which a
    few waiters would exhaust). If the task is cancelled, a hold that arrives
    later is released at once, so a cancelled acquire leaves nothing held.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[bool] = loop.create_future()
    cancelled = threading.Event()

    def deliver(acquired: bool) -> None:
        if not outcome.done():
            outcome.set_result(acquired)
        elif acquired:
            lock.release()

    def deliver_error(exc: BaseException) -> None:
        if not outcome.done():
            outcome.set_exception(exc)

    def wait() -> None:
        try:
            acquired = lock.acquire(blocking)
        except BaseException as exc:
            loop.call_soon_threadsafe(deliver_error, exc)
            return
        if cancelled.is_set() and acquired:
            lock.release()
            return
        try:
            loop.call_soon_threadsafe(deliver, acquired)
        except RuntimeError:  # the loop is closed: nobody will use this hold
            if acquired:
                lock.release()

    threading.Thread(target=wait, name=f"conch-acquire-{lock.name!r}", daemon=True).start()
    try:
        return await outcome
    except asyncio.CancelledError:
        cancelled.set()
        raise
