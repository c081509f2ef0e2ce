"""The postgresql:// backend: locks as session advisory locks.

The backend class is in ``backend.py``; see docs/postgresql.md for its design."""

from conch.backends.postgresql.backend import PostgreSQLBackend

__all__ = ["PostgreSQLBackend"]
