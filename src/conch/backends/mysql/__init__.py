"""The mysql:// backend: locks as ``GET_LOCK`` named locks of MySQL or MariaDB.

The backend class is ``backend.MySQLBackend``; docs/mysql.md has the design."""
