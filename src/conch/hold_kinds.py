"""What kind of hold a lock object takes: exclusive (the backend's ``handle``, the default),
shared (``shared_handle``) or a semaphore's permit (``semaphore_handle``), as one
``OpenHandle`` the coordinators (sync and :mod:`conch.aio`) give their lock objects."""

from __future__ import annotations

from collections.abc import Callable

from conch.backends.base import Backend, LockHandle, LossCallback

OpenHandle = Callable[[Backend, bytes, LossCallback], LockHandle]
"""Opens a lock object's handle on a backend, for a key, reporting losses to a callback."""


def shared(backend: Backend, key: bytes, on_lost: LossCallback) -> LockHandle:
    """A shared hold's handle."""
    return backend.shared_handle(key, on_lost)


def permits(limit: object) -> tuple[int, OpenHandle]:
    """The checked ``limit`` and the handle of one of its permits (``ValueError`` for a
    limit that is not an int of at least 1)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a semaphore's limit must be an int >= 1, not {limit!r}")
    checked = limit

    def permit(backend: Backend, key: bytes, on_lost: LossCallback) -> LockHandle:
        return backend.semaphore_handle(key, checked, on_lost)

    return checked, permit
