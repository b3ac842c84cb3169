"""Statistical tests of the vectorised discrete Gaussian against its exact probability mass function.

The pmf is computed in exact rationals times exp, summed far into the tails. Each check uses
a bound that a correct sampler fails with probability far below 1e-6 for any seed. A biased
sampler (a wrong acceptance probability, a lost sign, an off-by-one scale) fails them.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from privacy.errors import InvalidPrivacyParameter
from privacy.fast_sampling import sample_discrete_gaussian_vector
from privacy.random import seeded_random

DRAWS = 200_000


def exact_pmf(sigma_squared: Fraction, support: int) -> dict[int, float]:
    """Return P(z) of the discrete Gaussian for |z| <= support (the mass beyond is negligible)."""
    weights = {z: math.exp(-float(Fraction(z * z) / (2 * sigma_squared))) for z in range(-support, support + 1)}
    total = math.fsum(weights.values())
    return {z: w / total for z, w in weights.items()}


@pytest.mark.parametrize(("sigma_squared", "seed"), [(Fraction(1, 2), 1), (Fraction(2), 2), (Fraction(9, 4), 3),
                                                     (Fraction(65), 4), (Fraction(1000), 5)])
def test_fast_sampler_matches_exact_pmf(sigma_squared: Fraction, seed: int) -> None:
    support = int(12 * math.sqrt(sigma_squared)) + 3
    pmf = exact_pmf(sigma_squared, support)
    mean_variance = math.fsum(z * z * p for z, p in pmf.items())

    draws = sample_discrete_gaussian_vector(sigma_squared, DRAWS, seeded_random(seed))

    assert draws.dtype == np.int64
    assert draws.shape == (DRAWS,)
    # Mean: zero within 6 standard errors.
    assert abs(draws.mean()) < 6 * math.sqrt(mean_variance / DRAWS)
    # Variance: within 6 standard errors of the pmf's (the fourth moment bounds its spread).
    fourth = math.fsum(z**4 * p for z, p in pmf.items())
    assert abs(draws.var() - mean_variance) < 6 * math.sqrt((fourth - mean_variance**2) / DRAWS)
    # Tail: draws beyond 3 sigma match the pmf's tail mass within 6 standard errors.
    cut = 3 * math.sqrt(sigma_squared)
    tail = math.fsum(p for z, p in pmf.items() if abs(z) > cut)
    observed = float(np.mean(np.abs(draws) > cut))
    assert abs(observed - tail) < 6 * math.sqrt(tail * (1 - tail) / DRAWS) + 1e-5
    # Chi-square over bins with at least 50 expected draws. The other values are pooled into
    # two tail bins.
    values = sorted(z for z, p in pmf.items() if p * DRAWS >= 50)
    low, high = values[0], values[-1]
    observed_counts = [int(np.sum(draws < low))] + [int(np.sum(draws == z)) for z in values] + [int(np.sum(draws > high))]
    expected = [math.fsum(p for z, p in pmf.items() if z < low) * DRAWS] + [pmf[z] * DRAWS for z in values] + \
        [math.fsum(p for z, p in pmf.items() if z > high) * DRAWS]
    pairs = [(o, e) for o, e in zip(observed_counts, expected) if e > 0]
    statistic = sum((o - e) ** 2 / e for o, e in pairs)
    assert stats.chi2.sf(statistic, len(pairs) - 1) > 1e-6


def test_fast_sampler_is_symmetric_and_reproducible() -> None:
    first = sample_discrete_gaussian_vector(Fraction(5), 50_000, seeded_random(11))
    again = sample_discrete_gaussian_vector(Fraction(5), 50_000, seeded_random(11))

    assert np.array_equal(first, again)
    positive, negative = int(np.sum(first > 0)), int(np.sum(first < 0))
    assert abs(positive - negative) < 6 * math.sqrt(positive + negative)


def test_fast_sampler_rounds_variance_up() -> None:
    """A variance of 2.1 is drawn as 2.25: never less noise than requested."""
    draws = sample_discrete_gaussian_vector(2.1, DRAWS, seeded_random(12))
    pmf = exact_pmf(Fraction(9, 4), 40)
    variance = math.fsum(z * z * p for z, p in pmf.items())

    assert abs(draws.var() - variance) < 0.05


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), 2**21])
def test_fast_sampler_rejects_bad_variance(bad: float) -> None:
    with pytest.raises(InvalidPrivacyParameter):
        sample_discrete_gaussian_vector(bad, 10, seeded_random(0))


def test_fast_sampler_empty_vector() -> None:
    assert sample_discrete_gaussian_vector(Fraction(2), 0, seeded_random(0)).shape == (0,)
