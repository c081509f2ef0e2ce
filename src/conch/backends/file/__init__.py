"""The ``file://`` backend: ``flock`` locks on the files of one local directory (docs/file.md)."""

from conch.backends.file.backend import FileBackend

__all__ = ["FileBackend"]
