"""``tooz.drivers.memcached``: the class of the coordinators for memcached:// URLs."""

from __future__ import annotations

from conch.compat.tooz.driver import CoordinationDriver


class MemcachedDriver(CoordinationDriver):
    """A coordinator on conch's backend for tooz's memcached driver's URLs."""
