"""The agent's baseline rule: the first rounds that hold windows, grown to enough windows."""

from __future__ import annotations

import pytest

from agent.service import baseline_round_count


@pytest.mark.parametrize(
    ("windows_per_round", "expected"),
    [
        ([20, 20, 20], 2),  # two rounds already hold 16 windows
        ([1, 2, 30, 5], 3),  # a thin start grows by one whole round
        ([1, 2, 3], 3),  # too few windows anywhere: every round, no further
        ([40], 2),  # fewer rounds than requested: the requested count is kept
        ([], 2),
    ],
)
def test_baseline_round_count_cases(windows_per_round: list[int], expected: int) -> None:
    assert baseline_round_count(windows_per_round, baseline_rounds=2, min_baseline_windows=16) == expected
