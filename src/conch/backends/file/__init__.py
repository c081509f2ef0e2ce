"""The file:// backend: locks as ``flock`` on files of one local directory.

The backend class is ``backend.FileBackend``; docs/file.md has the design."""
