"""Tests for privacy.audit: Clopper-Pearson intervals and the epsilon lower bound."""

from __future__ import annotations

import math

import pytest

from privacy.audit import clopper_pearson, epsilon_lower_bound


def test_clopper_pearson_zero_successes_upper_limit() -> None:
    """With no success in n trials the upper limit solves (1 - p)^n = alpha / 2."""
    low, high = clopper_pearson(0, 1000, alpha=0.05)

    assert low == 0.0
    assert high == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-9)


def test_clopper_pearson_contains_the_estimate() -> None:
    low, high = clopper_pearson(300, 1000, alpha=0.05)

    assert low < 0.3 < high
    assert high - low < 0.06


def test_epsilon_bound_of_deterministic_difference_is_large() -> None:
    bound = epsilon_lower_bound(1000, 0, 1000, delta=0.0)

    # Each two-sided interval runs at alpha / 2, so each of its limits at alpha / 4.
    lower = 0.0125 ** (1 / 1000)
    assert bound == pytest.approx(math.log(lower / (1 - lower)), rel=1e-9)


def test_epsilon_bound_of_equal_counts_is_zero() -> None:
    assert epsilon_lower_bound(500, 500, 1000, delta=1e-5) == 0.0


def test_epsilon_bound_uses_complement_event() -> None:
    """Counts near one give their evidence through the event's complement."""
    forward = epsilon_lower_bound(50, 5, 1000, delta=0.0)
    mirrored = epsilon_lower_bound(950, 995, 1000, delta=0.0)

    assert mirrored == pytest.approx(forward)
    assert forward > 1.0


@pytest.mark.parametrize(("successes", "trials"), [(-1, 10), (11, 10), (0, 0)])
def test_clopper_pearson_invalid_counts_raise(successes: int, trials: int) -> None:
    with pytest.raises(ValueError, match="successes must be in"):
        clopper_pearson(successes, trials, alpha=0.05)
