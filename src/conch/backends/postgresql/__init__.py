"""The postgresql:// backend: locks as session advisory locks.

The backend class is ``backend.PostgreSQLBackend``; docs/postgresql.md has the design."""
