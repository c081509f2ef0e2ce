"""Lock names as server keys, distinct for distinct names; a backend's mapping is part of its
protocol and must never change (docs/kit.md, "Names and keys")."""

from __future__ import annotations

import hashlib
import re

_UNREADABLE = re.compile(rb"[^A-Za-z0-9_-]+")


def hex_digest(name: bytes, chars: int = 64) -> str:
    """The first ``chars`` hex digits of ``name``'s SHA-256 (64: all of it)."""
    return hashlib.sha256(name).hexdigest()[:chars]


def readable_key(name: bytes, chars: int = 64) -> str:
    """``<readable>.<hex digest>``: the first 48 bytes of ``name`` with every run of
    characters other than letters, digits, ``_`` and ``-`` made one ``_``, then its SHA-256."""
    readable = _UNREADABLE.sub(b"_", name[:48]).decode("ascii")
    return f"{readable}.{hex_digest(name, chars)}"


def int64_key(name: bytes) -> int:
    """64 bits of ``name``'s SHA-256 as a signed integer (a PostgreSQL ``bigint``)."""
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
