"""Lock names as server keys: pinned to the keys conch has always used, so that a fleet
upgraded one process at a time still excludes itself."""

from __future__ import annotations

from conch.backends.kit.naming import hex_digest, int64_key, readable_key


def test_a_readable_key_keeps_letters_digits_dash_underscore_then_the_digest() -> None:
    assert readable_key(b"vnf/42 instantiate\x00x", 40) == (
        "vnf_42_instantiate_x.d84501d1f2cafbf81757693f72b98009133c9ab8")


def test_a_readable_key_shows_only_the_first_48_bytes_of_a_long_name() -> None:
    assert readable_key(b"a" * 60) == "a" * 48 + (
        ".11ee391211c6256460b6ed375957fadd8061cafbb31daf967db875aebd5aaad4")


def test_names_that_read_alike_get_distinct_keys() -> None:
    assert readable_key(b"vnf 42") != readable_key(b"vnf/42")
    assert readable_key(b"vnf 42").split(".")[0] == readable_key(b"vnf/42").split(".")[0]


def test_non_ascii_names_make_ascii_keys() -> None:
    key = readable_key("verrou-é-\u2603".encode())
    assert key.isascii() and key.startswith("verrou-_")


def test_the_digest_and_the_64_bit_key_are_sha256() -> None:
    assert hex_digest(b"vnf-42") == (
        "98d3e2368c9883c115e807097bc33a0a950a12e6b02241b408f4c32853cc543f")
    assert hex_digest(b"vnf-42", 40) == hex_digest(b"vnf-42")[:40]
    assert int64_key(b"vnf-42") == -7434349835943640127
    assert -(2**63) <= int64_key(b"\xff" * 100) < 2**63
