"""``tooz.drivers.zookeeper``: the class of the coordinators for zookeeper:// and kazoo:// URLs."""

from __future__ import annotations

from conch.compat.tooz.driver import CoordinationDriver


class KazooDriver(CoordinationDriver):
    """A coordinator on conch's backend for tooz's zookeeper driver's URLs."""
