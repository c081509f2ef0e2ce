"""The redis:// and rediss:// backend: locks as keys with a TTL (docs/redis.md)."""

from conch.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
