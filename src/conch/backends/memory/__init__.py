"""The ``memory://`` backend: locks within one process, for tests and examples."""

from conch.backends.memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
