"""The etcd:// and etcd+https:// backend: locks as keys on a lease, through etcd's JSON gateway.

``EtcdBackend`` (``backend.py``) is imported on first use, so importing this package imports no
client library; docs/etcd.md has the design."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.etcd.backend import EtcdBackend

__all__ = ["EtcdBackend"]
__getattr__ = lazy_exports(__name__, EtcdBackend="backend")
