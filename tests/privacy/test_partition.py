"""Tests for privacy.partition: the threshold formula and its release probabilities."""

from __future__ import annotations

import math
import random

import pytest

from privacy.errors import InvalidPrivacyParameter
from privacy.partition import partition_threshold, select_partitions
from privacy.random import seeded_random

TRIALS = 20_000
Z_LIMIT = 5.0


class CountingSource:
    """Seeded integer source that counts its draws."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.calls = 0

    def randbelow(self, n: int) -> int:
        self.calls += 1
        return self._random.randrange(n)

    def getrandbits(self, k: int) -> int:
        self.calls += 1
        return self._random.getrandbits(k)


def threshold_from_formula(epsilon: float, delta: float, k: int) -> int:
    t = k / epsilon
    p = math.exp(-1 / t)
    return 1 + math.ceil(t * math.log(k / (delta * (1 + p))))


# Worked by hand, with t = k / epsilon and p = exp(-1/t):
#   (1.0, 1e-6, 1):  t = 1,   p = 0.367879, ln(1 / (1e-6 * 1.367879)) = ln(731058.6) = 13.5022
#                    -> 1 + ceil(13.5022) = 15
#   (1.0, 1e-5, 4):  t = 4,   p = 0.778801, ln(4 / (1e-5 * 1.778801)) = ln(224870.6) = 12.3233
#                    -> 1 + ceil(4 * 12.3233 = 49.2931) = 51
#   (0.5, 1e-6, 10): t = 20,  p = 0.951229, ln(10 / (1e-6 * 1.951229)) = ln(5124974) = 15.4496
#                    -> 1 + ceil(20 * 15.4496 = 308.993) = 310
#   (2.0, 1e-8, 5):  t = 2.5, p = 0.670320, ln(5 / (1e-8 * 1.670320)) = ln(2.99344e8) = 19.5171
#                    -> 1 + ceil(2.5 * 19.5171 = 48.7928) = 50
#   (1.0, 0.05, 1):  t = 1,   p = 0.367879, ln(1 / (0.05 * 1.367879)) = ln(14.6212) = 2.6825
#                    -> 1 + ceil(2.6825) = 4
HAND_COMPUTED = [
    (1.0, 1e-6, 1, 15),
    (1.0, 1e-5, 4, 51),
    (0.5, 1e-6, 10, 310),
    (2.0, 1e-8, 5, 50),
    (1.0, 0.05, 1, 4),
]


@pytest.mark.parametrize(("epsilon", "delta", "k", "expected"), HAND_COMPUTED)
def test_threshold_matches_hand_computation(epsilon: float, delta: float, k: int, expected: int) -> None:
    tau = partition_threshold(epsilon=epsilon, delta=delta, max_partitions_per_unit=k)

    assert tau == expected
    assert tau == threshold_from_formula(epsilon, delta, k)


@pytest.mark.parametrize(("epsilon", "delta", "k", "expected"), HAND_COMPUTED)
def test_threshold_bounds_single_unit_release(epsilon: float, delta: float, k: int, expected: int) -> None:
    """P(1 + Z >= tau) = p^(tau-1) / (1 + p) <= delta / k, and tau - 1 is the smallest such."""
    p = math.exp(-epsilon / k)

    released = p ** (expected - 1) / (1 + p)
    one_lower = p ** (expected - 2) / (1 + p)

    assert released <= delta / k
    assert one_lower > delta / k


@pytest.mark.parametrize(
    ("epsilon", "delta", "k", "seed"),
    [(1.0, 0.05, 1, 1), (1.0, 0.05, 3, 2), (0.5, 0.05, 2, 3)],
)
def test_single_unit_key_release_rate(
    epsilon: float, delta: float, k: int, seed: int
) -> None:
    rng = seeded_random(seed)
    tau = partition_threshold(epsilon=epsilon, delta=delta, max_partitions_per_unit=k)
    p = math.exp(-epsilon / k)
    exact_rate = p ** (tau - 1) / (1 + p)

    released = sum(
        1
        for _ in range(TRIALS)
        if select_partitions(
            {"198.51.100.7": 1}, epsilon=epsilon, delta=delta, max_partitions_per_unit=k, rng=rng
        )
    )

    rate = released / TRIALS
    assert rate <= delta / k
    assert abs(rate - exact_rate) <= Z_LIMIT * math.sqrt(exact_rate * (1 - exact_rate) / TRIALS)


def test_large_counts_released_almost_surely() -> None:
    rng = seeded_random(4)
    counts = {f"203.0.113.{i}": 200 for i in range(10)}

    results = [
        select_partitions(counts, epsilon=1.0, delta=1e-6, max_partitions_per_unit=4, rng=rng)
        for _ in range(300)
    ]

    assert all(set(result) == set(counts) for result in results)
    noised = [value for result in results for value in result.values()]
    p = math.exp(-1 / 4)
    variance = 2 * p / (1 - p) ** 2
    mean = sum(noised) / len(noised)
    assert abs(mean - 200) <= Z_LIMIT * math.sqrt(variance / len(noised))


def test_released_values_reach_threshold_and_keep_order() -> None:
    rng = seeded_random(5)
    tau = partition_threshold(epsilon=1.0, delta=0.05, max_partitions_per_unit=1)
    counts = {"c.example": 4, "a.example": 3, "b.example": 5, "d.example": 2}

    for _ in range(500):
        released = select_partitions(counts, epsilon=1.0, delta=0.05, max_partitions_per_unit=1, rng=rng)

        assert all(value >= tau for value in released.values())
        assert list(released) == [key for key in counts if key in released]


def test_zero_count_key_allowed() -> None:
    released = select_partitions(
        {"x": 0}, epsilon=1.0, delta=1e-6, max_partitions_per_unit=1, rng=seeded_random(6)
    )

    assert released == {}


def test_empty_counts_release_nothing() -> None:
    source = CountingSource(1)

    released = select_partitions({}, epsilon=1.0, delta=1e-6, max_partitions_per_unit=1, rng=source)

    assert released == {}
    assert source.calls == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_bad_count_rejected_before_any_draw(bad: object) -> None:
    source = CountingSource(1)

    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        select_partitions(
            {"ok": 10, "bad": bad}, epsilon=1.0, delta=1e-6, max_partitions_per_unit=1, rng=source
        )

    assert excinfo.value.name == "counts['bad']"
    assert source.calls == 0


@pytest.mark.parametrize("delta", [0, -0.1, 0.6, 1.0, math.nan])
def test_threshold_rejects_delta_out_of_range(delta: float) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        partition_threshold(epsilon=1.0, delta=delta, max_partitions_per_unit=1)

    assert excinfo.value.name == "delta"
    assert excinfo.value.rule == "in (0, 0.5]"


def test_threshold_accepts_largest_delta() -> None:
    tau = partition_threshold(epsilon=1.0, delta=0.5, max_partitions_per_unit=1)

    assert tau == threshold_from_formula(1.0, 0.5, 1)
    assert tau >= 2


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_threshold_rejects_bad_partition_bound(k: object) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        partition_threshold(epsilon=1.0, delta=1e-6, max_partitions_per_unit=k)  # type: ignore[arg-type]

    assert excinfo.value.name == "max_partitions_per_unit"


def test_threshold_rejects_bad_epsilon() -> None:
    with pytest.raises(InvalidPrivacyParameter, match=r"^epsilon must be in \(0, 100\]; got 0$"):
        partition_threshold(epsilon=0, delta=1e-6, max_partitions_per_unit=1)
