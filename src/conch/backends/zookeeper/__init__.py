"""The zookeeper:// backend: locks as ephemeral sequential znodes.

The backend class is ``backend.ZooKeeperBackend``; docs/zookeeper.md has the design."""
