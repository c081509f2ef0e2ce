"""The file:// backend: locks as ``flock`` on files of one local directory.

``FileBackend`` (``backend.py``) is imported on first use, so importing this package imports no
client library; docs/file.md has the design."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.file.backend import FileBackend

__all__ = ["FileBackend"]
__getattr__ = lazy_exports(__name__, FileBackend="backend")
