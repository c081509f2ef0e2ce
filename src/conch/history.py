"""Recording critical sections and checking a history for safety violations, for ``conch demo``
and the test suites: a :class:`Section` per critical section and, where holders write
through a store that checks fencing tokens, a :class:`FencedWrite` per write. Times come
from ``time.monotonic()``, one clock for every process of a host."""

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

    ``lost`` is True when the holder was told it lost the lock during the section;
    ``shared`` when it was a shared hold (checked by :mod:`conch.history_shared`).
    """

    name: str
    holder: str
    token: int | None
    enter: float
    exit: float
    lost: bool = False
    shared: bool = False


class Recorder:
    """Appends sections of one process to a JSON-lines file in a shared directory."""

    def __init__(self, directory: str | os.PathLike[str], holder: str) -> None:
        self.holder = holder
        self._path = pathlib.Path(directory) / f"{holder}.{os.getpid()}.jsonl"

    @contextmanager
    def section(self, name: str, token: int | None, lost: Lost | None = None,
                shared: bool = False) -> Iterator[None]:
        """Record the ``with`` body as a section; ``lost`` tells whether a loss was reported."""
        enter = time.monotonic()
        try:
            yield
        finally:
            leave = time.monotonic()
            self.add(Section(name, self.holder, token, enter, leave, bool(lost and lost()),
                             shared))

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
    of a loss; tokens of one name do not strictly increase in entry order among
    the holders not told of a loss (checked when ``fencing``); a loss went
    unreported: a holder with a larger token entered while a section that was
    never told of a loss went on (the lock changed hands under it; checked when
    ``fencing``, as the tokens tell who was granted the lock later).
    """
    found: list[str] = []
    by_name: dict[str, list[Section]] = defaultdict(list)
    for section in sections:
        by_name[section.name].append(section)
    for name, history in by_name.items():
        history.sort(key=lambda s: s.enter)
        told = [s for s in history if not s.lost]
        found += _overlaps(name, told)
        if fencing:
            # A holder told of a loss may have stopped (frozen, paged out) between its
            # grant and its entry: its entry time says nothing of when it was granted.
            found += _token_regressions(name, told)
            found += _unreported_losses(name, history)
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


def _unreported_losses(name: str, history: list[Section]) -> list[str]:
    # Two sections that were both not told are an overlap (above); here the later one
    # was told (it may have lost the lock at once), yet its grant, after the earlier
    # one's (larger token) and before the earlier one left, took the lock from it.
    found = []
    for index, section in enumerate(history):
        if section.lost or section.token is None:
            continue
        for later in history[index + 1:]:
            if later.enter >= section.exit:
                break
            if later.lost and later.token is not None and later.token > section.token:
                found.append(
                    f"{name}: {section.holder} (token {section.token}) was never told it "
                    f"lost the lock, yet {later.holder} got it with token {later.token} at "
                    f"{later.enter:.6f}, before {section.holder} left at {section.exit:.6f}"
                )
    return found


@dataclasses.dataclass(frozen=True)
class FencedWrite:
    """One write attempt on a fenced counter, as the store saw it.

    The counter of ``name`` starts at 0. A holder reads it, then writes ``read + 1``
    with the fencing token of its hold; the store accepts the write only if no
    larger token read or wrote the counter before it (the classic fencing check),
    and records every attempt in the order it decided them. A read the store
    refused for the same reason is recorded as a rejected attempt with ``read = -1``.
    """

    name: str
    holder: str
    token: int
    read: int
    accepted: bool


def fenced_counter_violations(
    writes: Iterable[FencedWrite], sections: Iterable[Section] = ()
) -> list[str]:
    """Each violation shown by a fenced counter's writes (in the store's order).

    Violations: an accepted write lost an update (it read a value that an accepted
    write had already replaced: two holders read the same value and both wrote);
    a write was rejected (a larger token had used the counter, so the writer's
    hold had passed to someone else) during a section of ``sections`` whose
    holder was never told of a loss.
    """
    found: list[str] = []
    accepted: dict[str, int] = defaultdict(int)
    unfenced_sections = {(s.name, s.holder, s.token) for s in sections if not s.lost}
    for write in writes:
        if not write.accepted:
            if (write.name, write.holder, write.token) in unfenced_sections:
                found.append(
                    f"{write.name}: the write of {write.holder} with token {write.token} was "
                    "rejected by the fencing check, but its holder was never told of a loss"
                )
            continue
        if write.read != accepted[write.name]:
            found.append(
                f"{write.name}: {write.holder} (token {write.token}) wrote {write.read + 1} "
                f"after reading {write.read}, but the counter was already "
                f"{accepted[write.name]}: an update was lost"
            )
        accepted[write.name] = write.read + 1
    return found


def load_writes(path: str | os.PathLike[str]) -> list[FencedWrite]:
    """The write attempts a fenced store recorded (JSON lines) at ``path``, in order."""
    source = pathlib.Path(path)
    if not source.exists():
        return []
    return [FencedWrite(**json.loads(line))
            for line in source.read_text(encoding="utf-8").splitlines()]
