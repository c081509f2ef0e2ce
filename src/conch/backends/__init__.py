"""Backends: one module per server, each translating the contract of :mod:`conch.backends.base`."""
