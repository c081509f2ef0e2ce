"""The etcd:// and etcd+https:// backend: locks as keys on a lease, through etcd's JSON gateway.

The backend class is in ``backend.py``; see docs/etcd.md for its design."""

from conch.backends.etcd.backend import EtcdBackend

__all__ = ["EtcdBackend"]
