"""The zookeeper:// backend: locks as ephemeral sequential znodes.

``ZooKeeperBackend`` (``backend.py``) is imported on first use, so importing this package
imports no client library; docs/zookeeper.md has the design."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.zookeeper.backend import ZooKeeperBackend

__all__ = ["ZooKeeperBackend"]
__getattr__ = lazy_exports(__name__, ZooKeeperBackend="backend")
