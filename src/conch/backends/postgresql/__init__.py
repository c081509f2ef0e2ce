"""The postgresql:// backend: locks as session advisory locks.

``PostgreSQLBackend`` (``backend.py``) is imported on first use, so importing this package
imports no client library; docs/postgresql.md has the design."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.postgresql.backend import PostgreSQLBackend

__all__ = ["PostgreSQLBackend"]
__getattr__ = lazy_exports(__name__, PostgreSQLBackend="backend")
