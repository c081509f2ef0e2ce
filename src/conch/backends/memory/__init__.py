"""The memory:// backend: locks within one process, for tests.

The backend class is in ``backend.py``."""

from conch.backends.memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
