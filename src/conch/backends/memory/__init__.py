"""The memory:// backend: locks within one process, for tests.

The backend class is ``backend.MemoryBackend``; docs/memory.md has the design."""
