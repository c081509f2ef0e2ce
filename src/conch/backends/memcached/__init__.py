"""The memcached:// backend: locks as keys with a TTL.

The backend class is in ``backend.py``; see docs/memcached.md for its design."""

from conch.backends.memcached.backend import MemcachedBackend

__all__ = ["MemcachedBackend"]
