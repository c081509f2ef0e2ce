"""The memcached:// backend: locks as keys with a TTL.

The backend class is ``backend.MemcachedBackend``; docs/memcached.md has the design."""
