"""Backends: one package per server (``<name>/backend.py`` and its parts, same role names in
each), each translating the contract of :mod:`conch.backends.base`; shared parts in ``kit``.
A package imports nothing itself: its client library is imported with ``backend.py``."""
