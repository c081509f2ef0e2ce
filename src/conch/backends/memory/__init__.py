"""The memory:// backend (``backend.MemoryBackend``): locks within one process, for tests."""
