"""What tooz's group calls return: a result whose ``get(timeout=None)`` gives the answer or
raises the call's error. conch makes the call at once, so ``get()`` never waits; an error a
caller never ``get()``s is dropped, as in tooz."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from concurrent import futures
from typing import Any, Generic, TypeVar

from conch.compat.tooz.errors import (
    NotImplemented,
    NotStarted,
    OperationTimedOut,
    ToozError,
    as_tooz_errors,
)

T = TypeVar("T")


class CoordAsyncResult(Generic[T], metaclass=abc.ABCMeta):
    """tooz's result of a group call."""

    @abc.abstractmethod
    def get(self, timeout: float | None = None) -> T:
        """The call's answer; raises its error (within ``timeout`` seconds)."""

    @abc.abstractmethod
    def done(self) -> bool:
        """True once the answer is there."""


class CoordinatorResult(CoordAsyncResult[T]):
    """A result backed by a :class:`concurrent.futures.Future` (tooz's constructor)."""

    def __init__(self, fut: futures.Future[T],
                 failure_translator: Callable[[], contextlib.AbstractContextManager[Any]]
                 | None = None) -> None:
        self._fut = fut
        self._failure_translator = failure_translator or contextlib.nullcontext

    def get(self, timeout: float | None = None) -> T:
        """The answer, or the call's error; :class:`OperationTimedOut` after ``timeout``."""
        try:
            with self._failure_translator():
                return self._fut.result(timeout=timeout)
        except futures.TimeoutError as exc:
            raise OperationTimedOut(str(exc), exc) from exc

    def done(self) -> bool:
        """True once the answer is there (always, for conch's calls)."""
        return self._fut.done()


def run_now(call: Callable[[], T]) -> CoordinatorResult[T]:
    """Make ``call`` now; its answer or :class:`ToozError` waits in the result for ``get()``.

    Using a coordinator that is not started, or a backend without groups
    (:class:`NotImplemented`), raises at once as in tooz, and so do errors that are not
    tooz's (a bad group name is a ``ValueError``).
    """
    outcome: futures.Future[T] = futures.Future()
    try:
        with as_tooz_errors():
            outcome.set_result(call())
    except (NotStarted, NotImplemented):
        raise
    except ToozError as exc:
        outcome.set_exception(exc)
    return CoordinatorResult(outcome)
