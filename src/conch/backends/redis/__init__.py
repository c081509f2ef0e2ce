"""The redis:// and rediss:// backend: locks as keys with a TTL.

``RedisBackend`` (``backend.py``) is imported on first use, so importing this package imports no
client library; docs/redis.md has the design."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
__getattr__ = lazy_exports(__name__, RedisBackend="backend")
