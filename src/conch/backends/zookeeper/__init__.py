"""The zookeeper:// backend (``backend.ZooKeeperBackend``): locks as ephemeral sequential
znodes, groups as ephemeral children (docs/zookeeper.md)."""
