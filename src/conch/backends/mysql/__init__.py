"""The mysql:// backend: locks as ``GET_LOCK`` named locks of MySQL or MariaDB.

The backend class is in ``backend.py``; see docs/mysql.md for its design."""

from conch.backends.mysql.backend import MySQLBackend

__all__ = ["MySQLBackend"]
