"""The ``postgresql://`` backend: locks as session-level advisory locks (docs/postgresql.md)."""

from conch.backends.postgresql.backend import PostgreSQLBackend

__all__ = ["PostgreSQLBackend"]
