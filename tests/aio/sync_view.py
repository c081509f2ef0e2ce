"""The async API seen through the sync one, so that the contract suite runs against both:
:class:`SyncView` and :class:`SyncLockView` have the interfaces of :class:`conch.Coordinator`
and :class:`conch.Lock` the suite uses; each call runs the :mod:`conch.aio` coroutine on one
private event loop (a daemon thread for the session) and waits, from any thread.
:func:`use_async_api` makes ``conch.connect`` and ``conch.Coordinator`` return views for the
rest of a test."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import conch
import conch.aio
from conch.lock import Blocking, HeldThrough, LockName

if TYPE_CHECKING:
    import pytest

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_mutex = threading.Lock()

API_VARIABLE = "CONCH_CONTRACT_API"
"""Set to ``async`` in a worker process's environment to run it through the views too."""


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the private loop and return its result (from any other thread)."""
    global _loop
    with _loop_mutex:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="sync-view-loop", daemon=True).start()
        loop = _loop
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


async def _call(function: Callable[[], T]) -> T:
    return function()


class SyncLockView(HeldThrough[asyncio.Event]):
    """A :class:`conch.aio.AsyncLock` with the methods of :class:`conch.Lock` (``lost`` is the
    async lock's Event: ``is_set()`` is safe from any thread)."""

    def __init__(self, lock: conch.aio.AsyncLock) -> None:
        super().__init__(lock)
        self.aio = lock

    def __repr__(self) -> str:
        return repr(self.aio)

    @property
    def name(self) -> LockName:
        return self.aio.name

    @property
    def held(self) -> bool:
        return self.aio.held

    def acquire(self, blocking: Blocking = True) -> bool:
        return run(self.aio.acquire(blocking))

    def release(self) -> None:
        run(self.aio.release())

    def __call__(self, blocking: Blocking = True) -> _HoldView:
        return _HoldView(self, self.aio(blocking))

    def __enter__(self) -> SyncLockView:
        return self(True).__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class _HoldView:
    def __init__(self, lock: SyncLockView, hold: conch.aio.AsyncHold) -> None:
        self._lock = lock
        self._hold = hold

    def __enter__(self) -> SyncLockView:
        run(self._hold.__aenter__())
        return self._lock

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        run(self._hold.__aexit__(exc_type, exc, traceback))


class SyncView:
    """A :class:`conch.aio.AsyncCoordinator` with the methods of :class:`conch.Coordinator`."""

    def __init__(
        self, url: str, member_id: str | None = None, prefix: str = "",
        require: Iterable[str] = (),
    ) -> None:
        self.aio = conch.aio.AsyncCoordinator(url, member_id, prefix, require)

    def __repr__(self) -> str:
        return repr(self.aio)

    @property
    def url(self) -> str:
        return self.aio.url

    @property
    def member_id(self) -> str:
        return self.aio.member_id

    @property
    def capabilities(self) -> conch.Capabilities:
        return self.aio.capabilities

    @property
    def is_started(self) -> bool:
        return self.aio.is_started

    def start(self) -> SyncView:
        run(self.aio.start())
        return self

    def stop(self) -> None:
        run(self.aio.stop())

    def lock(self, name: LockName) -> SyncLockView:
        return SyncLockView(run(_call(lambda: self.aio.lock(name))))

    get_lock = lock

    def __enter__(self) -> SyncView:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def connect(
    url: str | None = None, member_id: str | None = None, prefix: str = "",
    require: Iterable[str] = (),
) -> SyncView:
    """Like :func:`conch.connect`, through the async API."""
    from conch.defaults import default_url

    return SyncView(url or default_url(), member_id, prefix, require).start()


def use_async_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the test ends, ``conch.connect`` / ``conch.Coordinator`` make views, here and
    in the worker processes the test starts."""
    monkeypatch.setattr(conch, "connect", connect)
    monkeypatch.setattr(conch, "Coordinator", SyncView)
    monkeypatch.setenv(API_VARIABLE, "async")


def install_in_worker() -> None:
    """In a worker process: use the views when the parent test asked for the async API."""
    if os.environ.get(API_VARIABLE) == "async":
        conch.connect = connect  # type: ignore[assignment]
        conch.Coordinator = SyncView  # type: ignore[misc,assignment]
