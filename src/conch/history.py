"""Recording critical sections and checking a history for safety violations.

Used by ``conch demo`` and by the test suites (one checker for all). Times come
from ``time.monotonic()``, which is one clock for every process of a host.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


@dataclasses.dataclass(frozen=True)
class Section:
    """One critical section: who held ``name``, with which token, from ``enter`` to ``exit``.

    ``lost`` is True when the holder was told it lost the lock during the section.
    """

    name: str
    holder: str
    token: int | None
    enter: float
    exit: float
    lost: bool = False


class Recorder:
    """Appends sections of one process to a JSON-lines file in a shared directory."""

    def __init__(self, directory: str | os.PathLike[str], holder: str) -> None:
        self.holder = holder
        self._path = pathlib.Path(directory) / f"{holder}.{os.getpid()}.jsonl"

    @contextmanager
    def section(self, name: str, token: int | None, lost: Lost | None = None) -> Iterator[None]:
        """Record the ``with`` body as a section; ``lost`` tells whether a loss was reported."""
        enter = time.monotonic()
        try:
            yield
        finally:
            leave = time.monotonic()
            self.add(Section(name, self.holder, token, enter, leave, bool(lost and lost())))

    def add(self, section: Section) -> None:
        """Append ``section`` to this process's file."""
        with self._path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(dataclasses.asdict(section)) + "\n")


class Lost:
    """A callable telling whether a loss was reported, e.g. ``Lost(lock.lost.is_set)``."""

    def __init__(self, probe: object) -> None:
        self._probe = probe

    def __call__(self) -> bool:
        return bool(self._probe() if callable(self._probe) else self._probe)


def load(directory: str | os.PathLike[str]) -> list[Section]:
    """Every section recorded under ``directory``."""
    sections = []
    for path in sorted(pathlib.Path(directory).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            sections.append(Section(**json.loads(line)))
    return sections


def violations(sections: Iterable[Section], *, fencing: bool = True) -> list[str]:
    """Each safety violation in a history, as a sentence; empty when the history is safe.

    Violations: two sections on one name overlap while neither holder was told
    of a loss; tokens of one name do not strictly increase in entry order
    (checked when ``fencing``).
    """
    found: list[str] = []
    by_name: dict[str, list[Section]] = defaultdict(list)
    for section in sections:
        by_name[section.name].append(section)
    for name, history in by_name.items():
        history.sort(key=lambda s: s.enter)
        found += _overlaps(name, [s for s in history if not s.lost])
        if fencing:
            found += _token_regressions(name, history)
    return found


def _overlaps(name: str, history: list[Section]) -> list[str]:
    found = []
    latest: Section | None = None  # the section that exits last so far
    for section in history:
        if latest is not None and section.enter < latest.exit:
            found.append(
                f"{name}: {section.holder} entered at {section.enter:.6f} while "
                f"{latest.holder} held it until {latest.exit:.6f}"
            )
        if latest is None or section.exit > latest.exit:
            latest = section
    return found


def _token_regressions(name: str, history: list[Section]) -> list[str]:
    found = []
    previous: Section | None = None
    for section in history:
        if section.token is None:
            found.append(f"{name}: {section.holder} held it without a fencing token")
        elif previous is not None and previous.token is not None \
                and section.token <= previous.token:
            found.append(
                f"{name}: token {section.token} of {section.holder} does not exceed "
                f"token {previous.token} of {previous.holder} who held it before"
            )
        previous = section
    return found
