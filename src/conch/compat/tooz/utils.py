"""``tooz.utils``: the helpers code written against tooz calls (its drivers' msgpack
serialization is theirs alone: conch stores capabilities as JSON, see ``groups``)."""

from __future__ import annotations

import datetime
from typing import NoReturn

from conch.compat.tooz.errors import SerializationError, ToozError

__all__ = ["SerializationError", "convert_blocking", "millis_to_datetime", "raise_with_cause",
           "to_binary"]


def to_binary(text: str | bytes, encoding: str = "ascii") -> bytes:
    """``text`` as bytes (encoded with ``encoding`` unless it is bytes already)."""
    return text if isinstance(text, bytes) else text.encode(encoding)


def convert_blocking(blocking: bool | float | str,
                     timeout: float | None = None) -> tuple[bool, float | None]:
    """tooz's ``blocking`` argument as ``(blocking, timeout)``: a number means wait that long."""
    if isinstance(blocking, bool):
        return blocking, timeout
    return True, float(blocking)


def millis_to_datetime(milliseconds: str | float) -> datetime.datetime:
    """Milliseconds since the epoch as a local naive datetime."""
    return datetime.datetime.fromtimestamp(float(milliseconds) / 1000)


def raise_with_cause(exc_cls: type[ToozError], message: str,
                     cause: BaseException | None = None) -> NoReturn:
    """Raise ``exc_cls(message, cause=cause)`` chained to ``cause`` (``ValueError`` unless it
    is a tooz error class)."""
    if not issubclass(exc_cls, ToozError):
        raise ValueError("Subclass of tooz error is required")
    raise exc_cls(message, cause=cause) from cause
