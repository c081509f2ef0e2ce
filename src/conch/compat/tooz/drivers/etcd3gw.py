"""``tooz.drivers.etcd3gw``: the class of the coordinators for etcd3+http[s]:// URLs."""

from __future__ import annotations

from conch.compat.tooz.driver import CoordinationDriver


class Etcd3Driver(CoordinationDriver):
    """A coordinator on conch's backend for tooz's etcd3gw driver's URLs."""
