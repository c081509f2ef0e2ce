"""The memcached:// backend: locks as keys with a TTL.

``MemcachedBackend`` (``backend.py``) is imported on first use, so importing this package
imports no client library; docs/memcached.md has the design."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.memcached.backend import MemcachedBackend

__all__ = ["MemcachedBackend"]
__getattr__ = lazy_exports(__name__, MemcachedBackend="backend")
