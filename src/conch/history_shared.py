"""Checking a history of holds that may overlap by design: semaphore permits (at most
``limit`` at once) and shared locks (shared sections together, an exclusive one alone).
Sections are :class:`conch.history.Section`; a shared one has ``shared`` set."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from conch.history import Section


def permit_violations(sections: Iterable[Section], limit: int) -> list[str]:
    """Each moment more than ``limit`` sections of one name (not told of a loss) were
    inside at once, and each token given to two holds."""
    found: list[str] = []
    for name, history in _by_name(sections).items():
        inside: list[Section] = []
        for section in sorted(history, key=lambda s: s.enter):
            inside = [s for s in inside if s.exit > section.enter] + [section]
            if len(inside) > limit:
                holders = ", ".join(f"{s.holder} (token {s.token})" for s in inside)
                found.append(f"{name}: {len(inside)} holders at {section.enter:.6f}, more "
                             f"than the limit {limit}: {holders}")
        found += _shared_tokens(name, history)
    return found


def exclusion_violations(sections: Iterable[Section]) -> list[str]:
    """Each exclusive section that overlapped another section of its name (neither told of
    a loss), and each token given to two holds."""
    found: list[str] = []
    for name, history in _by_name(sections).items():
        history.sort(key=lambda s: s.enter)
        for index, section in enumerate(history):
            for other in history[index + 1:]:
                if other.enter >= section.exit:
                    break
                if not (section.shared and other.shared):
                    kinds = "exclusive" if not other.shared else "shared"
                    found.append(f"{name}: {other.holder} ({kinds}) entered at "
                                 f"{other.enter:.6f} while {section.holder} held it until "
                                 f"{section.exit:.6f}, and one of them was exclusive")
        found += _shared_tokens(name, history)
    return found


def _by_name(sections: Iterable[Section]) -> dict[str, list[Section]]:
    by_name: dict[str, list[Section]] = defaultdict(list)
    for section in sections:
        if not section.lost:
            by_name[section.name].append(section)
    return by_name


def _shared_tokens(name: str, history: list[Section]) -> list[str]:
    seen: dict[int, Section] = {}
    found = []
    for section in history:
        if section.token is None:
            found.append(f"{name}: {section.holder} held it without a fencing token")
        elif section.token in seen:
            found.append(f"{name}: token {section.token} was given to {section.holder} and "
                         f"to {seen[section.token].holder}")
        else:
            seen[section.token] = section
    return found
