"""The lock libraries compared on each server: one module per server (see :mod:`.base`)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from contextlib import AbstractContextManager

from benchmarks.contenders.base import Contender, Settings, Target


@dataclasses.dataclass(frozen=True)
class Server:
    """A server module, read: what to compare, where, against which goals."""

    name: str
    contenders: tuple[type[Contender], ...]
    target: Callable[[], AbstractContextManager[str]]
    targets: tuple[Target, ...]
    settings: Settings


def servers() -> list[str]:
    """The servers that have a contenders module."""
    return sorted(
        module.name for module in pkgutil.iter_modules(__path__) if module.name != "base"
    )


def load(name: str) -> Server:
    """Import ``benchmarks.contenders.<name>``; raise ``ValueError`` when there is none."""
    if name not in servers():
        raise ValueError(f"no benchmark for {name!r}; known: {', '.join(servers())}")
    module = importlib.import_module(f"{__name__}.{name}")
    return Server(
        name=name,
        contenders=tuple(module.CONTENDERS),
        target=module.target,
        targets=tuple(getattr(module, "TARGETS", ())),
        settings=getattr(module, "SETTINGS", Settings()),
    )
