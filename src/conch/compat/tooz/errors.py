"""tooz's exceptions, with tooz 9's names and hierarchy, each also the conch error it stands
for (``ToozConnectionError`` is a :class:`conch.BackendUnavailable`...). A malformed URL
raises :class:`conch.InvalidURL`, a ``ValueError`` and no ``ToozError``, so that services
retrying ``start()`` on ``ToozError`` stop at a configuration mistake."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import conch


class ToozError(conch.ConchError):
    """Base of every tooz error; ``cause`` is the error behind it, if any (as in tooz)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class NotImplemented(NotImplementedError, ToozError, conch.NotSupported):
    """A tooz feature conch does not provide (groups, leader election, shared locks...)."""

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


# Group errors: the group API raises NotImplemented, but services name these in
# ``except`` clauses, which must still resolve.
class GroupNotCreated(ToozError):
    """tooz: the group does not exist."""


class GroupAlreadyExist(ToozError):
    """tooz: the group already exists."""


class MemberAlreadyExist(ToozError):
    """tooz: the member already joined the group."""


class MemberNotJoined(ToozError):
    """tooz: the member is not in the group."""


class GroupNotEmpty(ToozError):
    """tooz: the group still has members."""


class WatchCallbackNotFound(ToozError):
    """tooz: no such watch callback."""


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
