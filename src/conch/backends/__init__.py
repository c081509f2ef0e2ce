"""Backends: one package per server (``<name>/backend.py`` and its parts, same role names in
each), each translating the contract of :mod:`conch.backends.base`; shared parts in ``kit``."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, **modules: str) -> Callable[[str], object]:
    """A package's ``__getattr__`` (PEP 562) giving each name of ``modules`` from the
    package's module named beside it, imported on first use: importing a backend's package
    imports neither its client library nor asyncio."""

    def __getattr__(name: str) -> object:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{modules[name]}"), name)

    return __getattr__
