"""The memory:// backend: locks within one process, for tests.

``MemoryBackend`` (``backend.py``) is imported on first use, so importing this package imports
no client library."""

from typing import TYPE_CHECKING

from conch.backends import lazy_exports

if TYPE_CHECKING:
    from conch.backends.memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
__getattr__ = lazy_exports(__name__, MemoryBackend="backend")
