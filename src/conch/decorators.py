"""``synchronized``: run a function while holding a lock named from its arguments."""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import logging
import os
import string
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from conch.coordinator import Coordinator
from conch.defaults import default_url
from conch.errors import LockAcquireFailed
from conch.lock import Blocking, LockName, wait_budget, waited

log = logging.getLogger("conch")

F = TypeVar("F", bound=Callable[..., Any])
NameOf = Callable[[tuple[Any, ...], dict[str, Any]], str]
"""Formats a lock's name from a call's positional and keyword arguments."""

# Coroutine functions are wrapped by conch.aio, which the sync core never imports: named
# here, it is imported when the first coroutine function is decorated.
_COROUTINE_WRAPPER = "conch.aio.decorators"

_default_mutex = threading.Lock()
_default: Coordinator | None = None


class Wrapping(Protocol):
    """A coordinator that wraps a :class:`~conch.Coordinator`, as
    :class:`conch.aio.AsyncCoordinator` does."""

    @property
    def coordinator(self) -> Coordinator: ...


def synchronized(
    template: str,
    blocking: Blocking = True,
    coordinator: Coordinator | Wrapping | None = None,
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
            wrap = importlib.import_module(_COROUTINE_WRAPPER).synchronized_coroutine
            return cast(F, wrap(func, name_of, template, blocking, coordinator))

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            lock = sync_coordinator(coordinator).lock(name_of(args, kwargs), template)
            started = time.monotonic()
            if not lock.acquire(blocking):
                raise not_acquired(lock.name, func, blocking)
            acquired = log_acquired(lock.name, func, started)
            try:
                return func(*args, **kwargs)
            finally:
                try:
                    lock.release()
                finally:
                    log_released(lock.name, func, acquired)

        return cast(F, run)

    return decorate


def sync_coordinator(given: Coordinator | Wrapping | None) -> Coordinator:
    """The coordinator ``synchronized`` was given, else the process default."""
    if given is None:
        return default_coordinator()
    return given if isinstance(given, Coordinator) else given.coordinator


def default_coordinator() -> Coordinator:
    """The process default coordinator (:func:`conch.defaults.default_url`), connected on
    first use and stopped at exit."""
    global _default
    with _default_mutex:
        if _default is None:
            coordinator = Coordinator(default_url()).start()
            atexit.register(coordinator.stop)
            _default = coordinator
        return _default


def _forget_in_child() -> None:
    # A forked child must not share its parent's session (or its file locks).
    global _default, _default_mutex
    _default, _default_mutex = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def _lock_namer(template: str, func: Callable[..., Any]) -> NameOf:
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


def not_acquired(
    name: LockName, func: Callable[..., Any], blocking: Blocking
) -> LockAcquireFailed:
    """The error of a call whose lock was not acquired in time."""
    return LockAcquireFailed(f"{func.__qualname__}: lock {name!r} not acquired "
                             f"{waited(blocking)}")


def log_acquired(name: LockName, func: Callable[..., Any], started: float) -> float:
    """Log the wait of an acquire started at ``started``; the time it ended."""
    acquired = time.monotonic()
    log.debug("lock %r acquired by %s after waiting %.6f s",
              name, func.__qualname__, acquired - started)
    return acquired


def log_released(name: LockName, func: Callable[..., Any], acquired: float) -> None:
    """Log the hold that started at ``acquired``, now released."""
    log.debug("lock %r released by %s after holding %.6f s",
              name, func.__qualname__, time.monotonic() - acquired)
