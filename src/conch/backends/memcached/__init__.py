"""The memcached:// backend (``backend.MemcachedBackend``; design: docs/memcached.md)."""
