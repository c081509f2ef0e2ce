"""``tooz.drivers.redis``: the class of the coordinators for redis:// and rediss:// URLs."""

from __future__ import annotations

from conch.compat.tooz.driver import CoordinationDriver


class RedisDriver(CoordinationDriver):
    """A coordinator on conch's backend for tooz's redis driver's URLs."""
