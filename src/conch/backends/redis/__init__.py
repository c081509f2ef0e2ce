"""The redis:// and rediss:// backend: locks as keys with a TTL.

The backend class is in ``backend.py``; see docs/redis.md for its design."""

from conch.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
