"""Lock names: any non-empty ``str``/``bytes`` up to 64 KiB, each its own lock."""

from __future__ import annotations

import pytest

import conch
from conch.lock import MAX_NAME_BYTES

# Names that break a naive mapping to keys, paths, SQL, Lua, or C strings.
ODD_NAMES: dict[str, str | bytes] = {
    "unicode": "vnf-ünïcødé-日本語-🔒",
    "slashes": "tenant/vnf/42",
    "parent": "../x",
    "path-escape": "../../etc/passwd",
    "absolute": "/etc/passwd",
    "nul": "a\x00b",
    "only-nul": b"\x00",
    "sql": "x'); DROP TABLE locks; -- \" `",
    "lua": "]]..redis.call('flushall')..[[ %s \\",
    "wildcards": "*?[a-z]{1,2}%_",
    "control": "line\nbreak\r\ttab\x7f",
    "space": " ",
    "non-utf8-bytes": b"\xff\xfe\x80\xc3",
    "4KiB": "k" * 4096,
    "64KiB": "m" * MAX_NAME_BYTES,
    "64KiB-multibyte": "é" * (MAX_NAME_BYTES // 2),
}

# Pairs of different names that a lossy mapping (truncation, case folding, trailing
# space padding, character substitution, C-string cut at NUL) would merge.
DISTINCT_NAMES: dict[str, tuple[str | bytes, str | bytes]] = {
    "differ-after-64th-char": ("a" * 64 + "1", "a" * 64 + "2"),
    "differ-after-250th-char": ("b" * 250 + "1", "b" * 250 + "2"),
    "long-shared-prefix": ("p" * 4000 + "x", "p" * 4000 + "y"),
    "64KiB-differ-at-end": ("q" * (MAX_NAME_BYTES - 1) + "1", "q" * (MAX_NAME_BYTES - 1) + "2"),
    "prefix-of-the-other": ("vnf-4", "vnf-42"),
    "case": ("vnf", "VNF"),
    "trailing-space": ("vnf", "vnf "),
    "accent": ("e", "é"),
    "unicode-normalisation": ("\u00e9", "e\u0301"),
    "after-nul": ("a\x00b", "a\x00c"),
    "trailing-nul": ("a", "a\x00"),
    "slash-or-underscore": ("a/b", "a_b"),
    "dot-or-dash": ("a.b", "a-b"),
    "invalid-utf8-or-replacement": (b"\xff", "\ufffd"),
}

INVALID_NAMES: dict[str, object] = {
    "empty-str": "",
    "empty-bytes": b"",
    "None": None,
    "int": 42,
    "list": ["x"],
    "bytearray": bytearray(b"x"),
    "over-64KiB-str": "x" * (MAX_NAME_BYTES + 1),
    "over-64KiB-bytes": b"x" * (MAX_NAME_BYTES + 1),
    "over-64KiB-once-encoded": "é" * (MAX_NAME_BYTES // 2 + 1),
}


def assert_one_lock(first: conch.Lock, second: conch.Lock) -> None:
    """``first`` and ``second`` exclude each other, whichever holds."""
    assert first.acquire(blocking=5)
    assert second.acquire(blocking=False) is False
    first.release()
    assert second.acquire(blocking=5)
    assert first.acquire(blocking=False) is False
    second.release()


@pytest.mark.parametrize("name", ODD_NAMES.values(), ids=ODD_NAMES.keys())
def test_odd_name_locks_and_excludes_like_any_other(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, name: str | bytes
) -> None:
    assert_one_lock(coordinator.lock(name), other_coordinator.lock(name))


@pytest.mark.parametrize("text", ["x", "vnf-ünïcødé", "a\x00b"])
def test_a_str_name_and_its_utf8_bytes_are_the_same_lock(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator, lock_name: str,
    text: str,
) -> None:
    name = lock_name + text
    assert_one_lock(coordinator.lock(name), other_coordinator.lock(name.encode()))


@pytest.mark.parametrize("pair", DISTINCT_NAMES.values(), ids=DISTINCT_NAMES.keys())
def test_different_names_never_exclude_each_other(
    coordinator: conch.Coordinator, other_coordinator: conch.Coordinator,
    pair: tuple[str | bytes, str | bytes],
) -> None:
    first, second = coordinator.lock(pair[0]), other_coordinator.lock(pair[1])
    assert first.acquire(blocking=5)
    assert second.acquire(blocking=False) is True, f"{pair[0]!r:.80} excludes {pair[1]!r:.80}"
    second.release()
    first.release()
    assert second.acquire(blocking=5)
    assert first.acquire(blocking=False) is True, f"{pair[1]!r:.80} excludes {pair[0]!r:.80}"
    first.release()
    second.release()


@pytest.mark.parametrize("name", INVALID_NAMES.values(), ids=INVALID_NAMES.keys())
def test_invalid_name_is_rejected_when_the_lock_object_is_made(
    coordinator: conch.Coordinator, name: object
) -> None:
    with pytest.raises(conch.InvalidLockName) as raised:
        coordinator.lock(name)  # type: ignore[arg-type]
    assert isinstance(raised.value, ValueError)
