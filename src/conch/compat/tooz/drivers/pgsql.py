"""``tooz.drivers.pgsql``: the class of the coordinators for postgresql:// URLs."""

from __future__ import annotations

from conch.compat.tooz.driver import CoordinationDriver


class PostgresDriver(CoordinationDriver):
    """A coordinator on conch's backend for tooz's pgsql driver's URLs."""
