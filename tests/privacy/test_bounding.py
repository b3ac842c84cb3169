"""Tests for privacy.bounding: per-unit key caps and uniform per-unit sampling."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from scipy import stats

from privacy.bounding import bound_keys_per_unit, sample_per_unit
from privacy.errors import InvalidPrivacyParameter
from privacy.random import seeded_random


def test_bound_keys_keeps_first_in_given_order() -> None:
    unit_keys = {
        "host-a": ["203.0.113.9", "198.51.100.4", "evil.example", "203.0.113.10"],
        "host-b": ["evil.example"],
    }

    bounded = bound_keys_per_unit(unit_keys, max_keys=2)

    assert bounded == {"host-a": ["203.0.113.9", "198.51.100.4"], "host-b": ["evil.example"]}


def test_bound_keys_counts_repeated_key_once() -> None:
    unit_keys = {"host-a": ["x", "x", "y", "x", "z", "w"]}

    bounded = bound_keys_per_unit(unit_keys, max_keys=3)

    assert bounded == {"host-a": ["x", "y", "z"]}


def test_bound_keys_keeps_units_without_keys() -> None:
    bounded = bound_keys_per_unit({"host-a": [], "host-b": ("k",)}, max_keys=1)

    assert bounded == {"host-a": [], "host-b": ["k"]}


def test_bound_keys_does_not_modify_input() -> None:
    unit_keys = {"host-a": ["a", "b", "c"]}

    bound_keys_per_unit(unit_keys, max_keys=1)

    assert unit_keys == {"host-a": ["a", "b", "c"]}


@pytest.mark.parametrize("bad", [0, -1, 1.0, True, None])
def test_bound_keys_rejects_bad_limit(bad: object) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        bound_keys_per_unit({"u": ["a"]}, max_keys=bad)  # type: ignore[arg-type]

    assert excinfo.value.name == "max_keys"
    assert str(excinfo.value) == f"max_keys must be an integer >= 1; got {bad!r}"


def test_sample_per_unit_small_units_kept_whole() -> None:
    items = {"host-a": [1, 2], "host-b": [3]}

    sampled = sample_per_unit(items, max_items=2, rng=seeded_random(1))

    assert sampled == {"host-a": [1, 2], "host-b": [3]}


def test_sample_per_unit_size_subset_and_order() -> None:
    windows = list(range(100, 130))
    rng = seeded_random(2)

    for _ in range(200):
        sampled = sample_per_unit({"host-a": windows}, max_items=7, rng=rng)["host-a"]

        assert len(sampled) == 7
        assert len(set(sampled)) == 7
        assert set(sampled) <= set(windows)
        assert sampled == sorted(sampled)


@pytest.mark.parametrize("seed", [3, 4])
def test_sample_per_unit_uniform_over_subsets(seed: int) -> None:
    """Every 2-subset of 5 items appears with frequency 1/10 (chi-square test)."""
    rng = seeded_random(seed)
    trials = 20_000

    seen = Counter(
        tuple(sample_per_unit({"u": "abcde"}, max_items=2, rng=rng)["u"]) for _ in range(trials)
    )

    subsets = list(itertools.combinations("abcde", 2))
    assert set(seen) == set(subsets)
    result = stats.chisquare([seen[s] for s in subsets], [trials / len(subsets)] * len(subsets))
    assert result.pvalue > 1e-4


def test_sample_per_unit_each_item_equally_likely() -> None:
    rng = seeded_random(5)
    trials = 20_000
    population = list(range(8))

    hits = Counter(
        item for _ in range(trials) for item in sample_per_unit({"u": population}, max_items=3, rng=rng)["u"]
    )

    expected = trials * 3 / 8
    error = 5 * math.sqrt(trials * (3 / 8) * (5 / 8))
    assert all(abs(hits[item] - expected) <= error for item in population)


@pytest.mark.parametrize("bad", [0, -2, 2.0, False])
def test_sample_per_unit_rejects_bad_limit(bad: object) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        sample_per_unit({"u": [1]}, max_items=bad, rng=seeded_random(1))  # type: ignore[arg-type]

    assert excinfo.value.name == "max_items"
