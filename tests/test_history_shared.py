"""The checks of histories whose holds may overlap by design (semaphores, shared locks)."""

from __future__ import annotations

from conch.history import Section
from conch.history_shared import exclusion_violations, permit_violations


def section(holder: str, token: int, enter: float, leave: float, *, shared: bool = False,
            lost: bool = False) -> Section:
    return Section("n", holder, token, enter, leave, lost, shared)


def test_permits_up_to_the_limit_pass_and_one_more_is_reported() -> None:
    two = [section("a", 1, 0, 3), section("b", 2, 1, 4), section("c", 3, 3.5, 5)]
    assert permit_violations(two, 2) == []
    three = [*two, section("d", 4, 2, 2.5)]
    found = permit_violations(three, 2)
    assert len(found) == 1 and "3 holders" in found[0] and "limit 2" in found[0]


def test_a_holder_told_of_a_loss_does_not_count_and_a_reused_token_is_reported() -> None:
    assert permit_violations([section("a", 1, 0, 3), section("b", 2, 1, 2, lost=True)], 1) == []
    found = permit_violations([section("a", 1, 0, 1), section("b", 1, 2, 3)], 1)
    assert found == ["n: token 1 was given to b and to a"]


def test_shared_sections_may_overlap_but_not_with_an_exclusive_one() -> None:
    readers = [section("a", 1, 0, 3, shared=True), section("b", 2, 1, 4, shared=True)]
    assert exclusion_violations(readers) == []
    writer_inside = [*readers, section("w", 3, 2, 2.5)]
    found = exclusion_violations(writer_inside)
    assert len(found) == 2 and all("exclusive" in text for text in found)
    writer_after = [*readers, section("w", 3, 4, 5)]
    assert exclusion_violations(writer_after) == []


def test_a_section_without_a_token_is_reported() -> None:
    assert "without a fencing token" in exclusion_violations(
        [Section("n", "a", None, 0, 1)])[0]
