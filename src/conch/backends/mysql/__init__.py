"""The mysql:// backend: locks as ``GET_LOCK`` named locks of MySQL or MariaDB.

``MySQLBackend`` (``backend.py``) is imported on first use, so importing this package imports no
client library; docs/mysql.md has the design."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.mysql.backend import MySQLBackend

__all__ = ["MySQLBackend"]
__getattr__ = lazy_exports(__name__, MySQLBackend="backend")
