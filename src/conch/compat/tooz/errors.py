"""tooz's exceptions, with tooz 9's names and hierarchy, each also the conch error it stands
for (``ToozConnectionError`` is a :class:`conch.BackendUnavailable`...). A malformed URL
raises :class:`conch.InvalidURL`, a ``ValueError`` and no ``ToozError``, so that services
retrying ``start()`` on ``ToozError`` stop at a configuration mistake."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import conch


class ToozError(conch.ConchError):
    """Base of every tooz error; ``cause`` is the error behind it, if any (as in tooz)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class NotImplemented(NotImplementedError, ToozError, conch.NotSupported):
    """A tooz feature this backend does not provide (groups, shared locks...)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        # NotImplementedError's own __init__ comes first in the MRO and would skip ``cause``.
        ToozError.__init__(self, message, cause)


class ToozConnectionError(ToozError, conch.BackendUnavailable):
    """The backend cannot be reached or refused the operation."""


class LockAcquireFailed(ToozError, conch.LockAcquireFailed):
    """``with lock:`` / ``with lock(blocking):`` did not get the lock."""


class LockLost(ToozError, conch.LockLost):
    """``with lock:`` ended after the hold was lost (not a tooz name: tooz only logs it)."""


class NotStarted(ToozError, conch.NotStarted):
    """The coordinator was used before ``start()`` or after ``stop()`` (not a tooz name)."""


class ToozDriverChosenPoorly(ToozError):
    """``get_coordinator(characteristics=...)`` asked for what the backend lacks."""


class OperationTimedOut(ToozError):
    """An operation timed out (kept for ``except`` clauses; conch does not raise it)."""


def _text(value: str | bytes) -> str:
    """An id as tooz shows it in messages and attributes (bytes decoded)."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


class GroupNotCreated(ToozError):
    """The group does not exist (``group_id``: its name as ``str``)."""

    def __init__(self, group_id: str | bytes) -> None:
        self.group_id = _text(group_id)
        super().__init__(f"Group {self.group_id} does not exist")


class GroupAlreadyExist(ToozError):
    """``create_group`` of a group that exists."""

    def __init__(self, group_id: str | bytes) -> None:
        self.group_id = _text(group_id)
        super().__init__(f"Group {self.group_id} already exists")


class GroupNotEmpty(ToozError):
    """``delete_group`` of a group that still has live members."""

    def __init__(self, group_id: str | bytes) -> None:
        self.group_id = _text(group_id)
        super().__init__(f"Group {self.group_id} is not empty")


class MemberAlreadyExist(ToozError):
    """``join_group`` by a member already in the group."""

    def __init__(self, group_id: str | bytes, member_id: str | bytes) -> None:
        self.group_id, self.member_id = _text(group_id), _text(member_id)
        super().__init__(f"Member {self.member_id} has already joined {self.group_id}")


class MemberNotJoined(ToozError):
    """The member is not in the group."""

    def __init__(self, group_id: str | bytes, member_id: str | bytes) -> None:
        self.group_id, self.member_id = _text(group_id), _text(member_id)
        super().__init__(f"Member {self.member_id} has not joined {self.group_id}")


class WatchCallbackNotFound(ToozError):
    """``unwatch_*`` of a callback that is not registered on the group."""

    def __init__(self, group_id: str | bytes, callback: Callable[..., object]) -> None:
        self.group_id, self.callback = _text(group_id), callback
        name = getattr(callback, "__name__", repr(callback))
        super().__init__(f"Callback {name} is not registered on group {self.group_id}")


class SerializationError(ToozError, conch.InvalidGroup):
    """Capabilities conch cannot store (not JSON with bytes, or too large); tooz raises it
    for what msgpack cannot pack. Also a :class:`conch.InvalidGroup` (a ``ValueError``)."""


@contextlib.contextmanager
def as_tooz_errors() -> Iterator[None]:
    """Re-raise conch's errors as their tooz counterparts, with the same (redacted) text."""
    try:
        yield
    except ToozError:
        raise
    except conch.BackendUnavailable as exc:
        raise ToozConnectionError(str(exc), exc) from exc
    except conch.NotSupported as exc:
        raise NotImplemented(str(exc), exc) from exc  # noqa: F901 (tooz's class)
    except conch.NotStarted as exc:
        raise NotStarted(str(exc), exc) from exc
    except conch.LockAcquireFailed as exc:
        raise LockAcquireFailed(str(exc), exc) from exc
