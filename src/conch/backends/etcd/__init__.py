"""The etcd:// and etcd+https:// backend (docs/etcd.md). ``EtcdBackend`` (``backend.py``)
is imported on first use, so importing this package imports no client library."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.etcd.backend import EtcdBackend

__all__ = ["EtcdBackend"]
__getattr__ = lazy_exports(__name__, EtcdBackend="backend")
