"""The etcd:// and etcd+https:// backend: locks as keys on a lease, through etcd's JSON gateway.

The backend class is ``backend.EtcdBackend``; docs/etcd.md has the design."""
