"""``tooz.drivers.file``: the class of the coordinators for file:// URLs."""

from __future__ import annotations

from conch.compat.tooz.driver import CoordinationDriver


class FileDriver(CoordinationDriver):
    """A coordinator on conch's backend for tooz's file driver's URLs."""
