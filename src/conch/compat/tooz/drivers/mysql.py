"""``tooz.drivers.mysql``: the class of the coordinators for mysql:// URLs."""

from __future__ import annotations

from conch.compat.tooz.driver import CoordinationDriver


class MySQLDriver(CoordinationDriver):
    """A coordinator on conch's backend for tooz's mysql driver's URLs."""
