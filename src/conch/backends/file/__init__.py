"""The file:// backend: locks as ``flock`` on files of one local directory.

The backend class is in ``backend.py``; see docs/file.md for its design."""

from conch.backends.file.backend import FileBackend

__all__ = ["FileBackend"]
