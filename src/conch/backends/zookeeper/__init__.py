"""The zookeeper:// backend: locks as ephemeral sequential znodes.

The backend class is in ``backend.py``; see docs/zookeeper.md for its design."""

from conch.backends.zookeeper.backend import ZooKeeperBackend

__all__ = ["ZooKeeperBackend"]
