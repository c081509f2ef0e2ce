"""The benchmark harness's bookkeeping: contended blocks combined, contenders in turn."""

from __future__ import annotations

import pytest
from benchmarks import harness
from benchmarks.run import in_turn


def _block(counts: list[int], seconds: float = 2.0, excluded: bool = True) -> harness.Throughput:
    return harness.Throughput(
        processes=len(counts), duration_s=seconds, counts=counts,
        total_per_s=sum(counts) / seconds, jain=harness.jain_index(counts), excluded=excluded,
    )


def test_combined_blocks_count_all_acquisitions_over_all_time() -> None:
    blocks = [_block([100, 100]), _block([300, 100]), _block([50, 150])]
    combined = harness.combined(blocks)
    assert combined.processes == 2
    assert combined.duration_s == 2.0
    assert combined.counts == [100, 100, 300, 100, 50, 150]
    assert combined.total_per_s == pytest.approx(800 / 6.0)
    assert combined.jain == pytest.approx((1.0 + 0.8 + 0.8) / 3)
    assert combined.excluded


def test_combined_is_not_exclusive_when_one_block_was_not() -> None:
    assert not harness.combined([_block([1, 1]), _block([1, 1], excluded=False)]).excluded


def test_every_other_block_reverses_the_contenders() -> None:
    order = ("a", "b", "c")
    assert [list(in_turn(order, block)) for block in (1, 2, 3)] == [
        ["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
