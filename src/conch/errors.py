"""One exception hierarchy for everything conch raises.

Client-library exceptions never reach callers: backends translate them into
these, with credentials removed from the message.
"""

from __future__ import annotations


class ConchError(Exception):
    """Base of every error conch raises."""


class LockAcquireFailed(ConchError):
    """A lock was not acquired within the allowed time (context manager, decorator)."""


class LockLost(ConchError):
    """A hold ended before ``release()``: session expired, lock broken, server lost it."""


class LockNotHeld(ConchError):
    """``release()`` was called on a lock object that does not hold its lock."""


class NotSupported(ConchError):
    """The backend lacks a capability or operation the caller asked for."""


class InvalidURL(ConchError, ValueError):
    """A backend URL is malformed, names an unknown scheme, or has a bad option."""


class InvalidLockName(ConchError, ValueError):
    """A lock name is empty, too long, or not ``str``/``bytes``."""


class BackendUnavailable(ConchError):
    """The backend cannot be reached or refused the operation (auth, I/O, network)."""


class NotStarted(ConchError):
    """The coordinator was used before ``start()`` or after ``stop()``."""


class BreakRefused(ConchError):
    """The backend refused to break a hold (the URL's user lacks the right)."""


class HolderChanged(ConchError):
    """``break_lock(name, token=...)``: the lock is no longer held by the hold with that
    token (released, or taken by someone else since it was described); nothing was broken."""


class InvalidGroup(ConchError, ValueError):
    """A group name or a member's capabilities cannot be used (empty, too long, NUL, not
    JSON)."""


class GroupNotFound(ConchError):
    """The group does not exist (never created, or deleted)."""


class GroupNotEmpty(ConchError):
    """The group still has live members, so it cannot be deleted."""


class UnknownNode(ConchError, LookupError):
    """``HashRing.remove_node`` was given a node the ring does not hold (it is ``.node``)."""

    def __init__(self, node: object) -> None:
        super().__init__(f"unknown node {node!r}")
        self.node = node


class LimitMismatch(ConchError, ValueError):
    """A semaphore was used with another limit than the one its holders use."""
