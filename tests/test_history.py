"""The safety checker every suite relies on: it must catch what it claims to catch."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from conch.history import (
    FencedWrite,
    Lost,
    Recorder,
    Section,
    fenced_counter_violations,
    load,
    load_writes,
    violations,
)


def _section(holder: str, token: int | None, enter: float, exit: float,
             name: str = "vnf-42", lost: bool = False) -> Section:
    return Section(name=name, holder=holder, token=token, enter=enter, exit=exit, lost=lost)


CLEAN = [
    _section("a", 1, 0.0, 1.0),
    _section("b", 2, 1.0, 2.0),  # enters exactly when a leaves: no overlap
    _section("a", 5, 2.5, 3.0),
    _section("c", 1, 0.5, 2.5, name="other-name"),  # another name may overlap freely
]


def test_a_clean_history_has_no_violations() -> None:
    assert violations(CLEAN) == []


def test_an_empty_history_has_no_violations() -> None:
    assert violations([]) == []


def test_overlapping_sections_are_reported_with_both_holders() -> None:
    found = violations([_section("a", 1, 0.0, 1.0), _section("b", 2, 0.9, 2.0)])
    assert len(found) == 1
    assert "vnf-42" in found[0] and "a" in found[0] and "b" in found[0]


def test_a_section_inside_a_long_earlier_one_is_reported() -> None:
    history = [
        _section("long", 1, 0.0, 10.0),
        _section("short", 2, 1.0, 2.0),
        _section("late", 3, 3.0, 4.0),
    ]
    assert len(violations(history)) == 2


def test_overlaps_are_found_whatever_the_recording_order() -> None:
    history = [_section("b", 2, 0.9, 2.0), _section("a", 1, 0.0, 1.0)]
    assert len(violations(history)) == 1


def test_a_section_whose_holder_was_told_of_a_loss_may_overlap() -> None:
    history = [_section("a", 1, 0.0, 5.0, lost=True), _section("b", 2, 1.0, 2.0)]
    assert violations(history) == []


def test_a_lost_section_does_not_hide_a_real_overlap_after_it() -> None:
    history = [
        _section("a", 1, 0.0, 5.0, lost=True),
        _section("b", 2, 1.0, 3.0),
        _section("c", 3, 2.0, 4.0),
    ]
    assert len(violations(history)) == 1


def test_a_repeated_token_is_reported() -> None:
    found = violations([_section("a", 7, 0.0, 1.0), _section("b", 7, 2.0, 3.0)])
    assert len(found) == 1 and "token 7" in found[0]


def test_a_decreasing_token_is_reported() -> None:
    found = violations([_section("a", 7, 0.0, 1.0), _section("b", 3, 2.0, 3.0)])
    assert len(found) == 1 and "token 3" in found[0] and "7" in found[0]


def test_a_missing_token_is_reported_only_when_fencing_is_expected() -> None:
    history = [_section("a", None, 0.0, 1.0), _section("b", 2, 2.0, 3.0)]
    assert any("without a fencing token" in problem for problem in violations(history))
    assert violations(history, fencing=False) == []


def test_token_order_is_not_checked_without_fencing() -> None:
    history = [_section("a", 7, 0.0, 1.0), _section("b", 3, 2.0, 3.0)]
    assert violations(history, fencing=False) == []


def test_recorded_sections_load_back_with_their_tokens_and_losses(tmp_path: pathlib.Path) -> None:
    told_of_loss = False
    first, second = Recorder(tmp_path, "first"), Recorder(tmp_path, "second")
    with first.section("vnf-42", 10, Lost(lambda: told_of_loss)):
        pass
    with second.section("vnf-42", 11, Lost(lambda: told_of_loss)):
        told_of_loss = True
    loaded = sorted(load(tmp_path), key=lambda section: section.enter)
    assert [(s.holder, s.token, s.lost) for s in loaded] == \
        [("first", 10, False), ("second", 11, True)]
    assert all(s.enter <= s.exit for s in loaded)
    assert loaded[0].exit <= loaded[1].enter
    assert violations(loaded) == []


def test_a_section_is_recorded_even_when_its_body_raises(tmp_path: pathlib.Path) -> None:
    recorder = Recorder(tmp_path, "raiser")
    try:
        with recorder.section("vnf-42", 1):
            raise RuntimeError("body failed")
    except RuntimeError:
        pass
    assert [section.token for section in load(tmp_path)] == [1]


# --- a loss nobody reported ----------------------------------------------------------------


def test_a_holder_never_told_while_a_later_token_took_the_lock_is_an_unreported_loss() -> None:
    # b was told (its hold ended at once), but its grant proves a lost its lock unawares.
    found = violations([_section("a", 1, 0.0, 5.0), _section("b", 2, 1.0, 2.0, lost=True)])
    assert len(found) == 1 and "never told" in found[0] and "token 2" in found[0]


def test_a_told_holder_overlapped_by_a_later_token_is_safe() -> None:
    history = [_section("a", 1, 0.0, 5.0, lost=True), _section("b", 2, 1.0, 2.0, lost=True)]
    assert violations(history) == []


def test_an_older_token_entering_late_is_not_taken_for_a_loss() -> None:
    # b was granted first (token 1) but entered late, and was told of its loss: its
    # grant says nothing about a's hold.
    history = [_section("a", 2, 0.0, 5.0), _section("b", 1, 1.0, 2.0, lost=True)]
    assert violations(history) == []


def test_a_told_holder_entering_late_with_an_old_token_is_not_a_regression() -> None:
    # b was granted token 1, then frozen before it entered; a got token 2 meanwhile.
    # b was told of its loss: its entry time says nothing of its grant.
    history = [_section("a", 2, 0.0, 1.0), _section("b", 1, 2.0, 3.0, lost=True),
               _section("c", 3, 4.0, 5.0)]
    assert violations(history) == []


def test_unreported_losses_are_not_checked_without_fencing() -> None:
    history = [_section("a", 1, 0.0, 5.0), _section("b", 2, 1.0, 2.0, lost=True)]
    assert violations(history, fencing=False) == []


# --- the fenced counter --------------------------------------------------------------------


def _write(holder: str, token: int, read: int, accepted: bool = True,
           name: str = "vnf-42") -> FencedWrite:
    return FencedWrite(name=name, holder=holder, token=token, read=read, accepted=accepted)


def test_accepted_writes_that_each_read_the_last_value_lose_no_update() -> None:
    writes = [_write("a", 1, 0), _write("a", 1, 1), _write("b", 2, 2), _write("a", 1, 3, False),
              _write("c", 9, 0, name="other-name")]
    assert fenced_counter_violations(writes) == []


def test_two_accepted_writes_of_one_value_are_a_lost_update() -> None:
    found = fenced_counter_violations([_write("a", 1, 0), _write("b", 2, 0)])
    assert len(found) == 1 and "update was lost" in found[0] and "b" in found[0]


def test_a_rejected_write_in_a_section_never_told_of_a_loss_is_reported() -> None:
    sections = [_section("a", 1, 0.0, 5.0), _section("b", 2, 1.0, 2.0, lost=True)]
    writes = [_write("b", 2, 0), _write("a", 1, 0, accepted=False)]
    found = fenced_counter_violations(writes, sections)
    assert len(found) == 1 and "never told" in found[0] and "token 1" in found[0]


def test_a_rejected_write_of_a_told_holder_is_the_fencing_at_work() -> None:
    sections = [_section("a", 1, 0.0, 5.0, lost=True), _section("b", 2, 1.0, 2.0)]
    writes = [_write("b", 2, 0), _write("a", 1, 0, accepted=False)]
    assert fenced_counter_violations(writes, sections) == []


def test_fenced_writes_load_back_in_order(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "writes.jsonl"
    writes = [_write("a", 1, 0), _write("b", 2, 0, accepted=False)]
    log.write_text("".join(json.dumps(dataclasses.asdict(w)) + "\n" for w in writes))
    assert load_writes(log) == writes
    assert load_writes(tmp_path / "missing.jsonl") == []
