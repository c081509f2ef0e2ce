"""The redis:// and rediss:// backend: locks as keys with a TTL.

The backend class is ``backend.RedisBackend``; docs/redis.md has the design."""
