"""Tests for privacy.mechanisms: exact discrete Laplace and discrete Gaussian samplers.

Statistical checks draw 20,000 samples per seed and allow five standard errors, so a
correct sampler fails one check with probability below 1e-6. Seeds are fixed, so the
outcome is reproducible.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from privacy.errors import InvalidPrivacyParameter
from privacy.mechanisms import (
    DiscreteLaplaceMechanism,
    add_discrete_laplace_noise,
    discrete_laplace_variance,
    sample_bernoulli_exp,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)
from privacy.random import seeded_random

SAMPLES = 20_000
SEEDS = [11, 12, 13]
Z_LIMIT = 5.0


class IntegerOnlySource:
    """A source that offers only integer draws, counting them; no float method exists."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.calls = 0

    def randbelow(self, n: int) -> int:
        self.calls += 1
        return self._random.randrange(n)

    def getrandbits(self, k: int) -> int:
        self.calls += 1
        return self._random.getrandbits(k)


def laplace_pmf(z: int, scale: float) -> float:
    p = math.exp(-1 / scale)
    return (1 - p) / (1 + p) * p ** abs(z)


def laplace_moments(scale: float) -> tuple[float, float]:
    """Return (variance, fourth moment) by summing the probability mass function."""
    p = math.exp(-1 / scale)
    limit = int(60 * scale) + 60
    second = math.fsum(z**2 * laplace_pmf(z, scale) for z in range(-limit, limit + 1))
    fourth = math.fsum(z**4 * laplace_pmf(z, scale) for z in range(-limit, limit + 1))
    assert second == pytest.approx(2 * p / (1 - p) ** 2, rel=1e-9)
    return second, fourth


def gaussian_moments(sigma_squared: float) -> tuple[float, float]:
    """Return (variance, fourth moment) of the discrete Gaussian by summation."""
    limit = int(40 * math.sqrt(sigma_squared)) + 40
    support = range(-limit, limit + 1)
    weights = [math.exp(-(z**2) / (2 * sigma_squared)) for z in support]
    total = math.fsum(weights)
    second = math.fsum(z**2 * w for z, w in zip(support, weights)) / total
    fourth = math.fsum(z**4 * w for z, w in zip(support, weights)) / total
    return second, fourth


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", [1, 3, Fraction(5, 2), 0.7])
def test_discrete_laplace_mean_and_variance(seed: int, scale: Fraction | int | float) -> None:
    rng = seeded_random(seed)
    variance, fourth = laplace_moments(float(scale))

    draws = np.array([sample_discrete_laplace(scale, rng) for _ in range(SAMPLES)], dtype=float)

    mean_error = Z_LIMIT * math.sqrt(variance / SAMPLES)
    assert abs(draws.mean()) <= mean_error
    # Standard error of the sample variance: sqrt((mu4 - sigma^4) / n).
    variance_error = Z_LIMIT * math.sqrt((fourth - variance**2) / SAMPLES)
    assert abs(draws.var(ddof=1) - variance) <= variance_error


@pytest.mark.parametrize("seed", SEEDS)
def test_discrete_laplace_symmetric_around_zero(seed: int) -> None:
    rng = seeded_random(seed)

    draws = [sample_discrete_laplace(2, rng) for _ in range(SAMPLES)]

    positive = sum(1 for z in draws if z > 0)
    negative = sum(1 for z in draws if z < 0)
    nonzero = positive + negative
    assert abs(positive - nonzero / 2) <= Z_LIMIT * math.sqrt(nonzero / 4)
    for magnitude in (1, 2, 3):
        up = draws.count(magnitude)
        down = draws.count(-magnitude)
        assert abs(up - down) <= Z_LIMIT * math.sqrt(up + down)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", [2, 0.3])
def test_discrete_laplace_matches_pmf(seed: int, scale: float) -> None:
    """Chi-square goodness of fit of the whole distribution, tails pooled."""
    rng = seeded_random(seed)
    draws = [sample_discrete_laplace(scale, rng) for _ in range(SAMPLES)]
    p = math.exp(-1 / scale)

    # Keep cells with expected count >= 5; pool everything beyond into two tails.
    limit = 0
    while SAMPLES * laplace_pmf(limit + 1, scale) >= 5:
        limit += 1
    tail = p ** (limit + 1) / (1 + p)  # P(Z >= limit + 1)
    expected = [SAMPLES * tail]
    expected += [SAMPLES * laplace_pmf(z, scale) for z in range(-limit, limit + 1)]
    expected += [SAMPLES * tail]
    observed = [sum(1 for z in draws if z < -limit)]
    observed += [draws.count(z) for z in range(-limit, limit + 1)]
    observed += [sum(1 for z in draws if z > limit)]

    result = stats.chisquare(observed, expected)

    assert result.pvalue > 1e-4


def test_discrete_laplace_zero_frequency() -> None:
    rng = seeded_random(5)
    scale = 1
    p_zero = laplace_pmf(0, scale)

    zeros = sum(1 for _ in range(SAMPLES) if sample_discrete_laplace(scale, rng) == 0)

    assert abs(zeros / SAMPLES - p_zero) <= Z_LIMIT * math.sqrt(p_zero * (1 - p_zero) / SAMPLES)


def test_float_scale_converted_exactly() -> None:
    """A float scale samples exactly like the Fraction of its binary value."""
    from_float = seeded_random(3)
    from_fraction = seeded_random(3)

    floats = [sample_discrete_laplace(0.1, from_float) for _ in range(500)]
    fractions = [sample_discrete_laplace(Fraction(0.1), from_fraction) for _ in range(500)]

    assert floats == fractions


def test_samplers_use_only_integer_draws() -> None:
    source = IntegerOnlySource(7)

    laplace = [sample_discrete_laplace(Fraction(7, 3), source) for _ in range(200)]
    gaussian = [sample_discrete_gaussian(Fraction(9, 4), source) for _ in range(200)]

    assert all(type(z) is int for z in laplace + gaussian)
    assert source.calls > 400
    assert not hasattr(source, "random")


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 2), Fraction(1), Fraction(5, 2)])
def test_bernoulli_exp_frequency(gamma: Fraction) -> None:
    rng = seeded_random(21)
    expected = math.exp(-float(gamma))

    successes = sum(1 for _ in range(SAMPLES) if sample_bernoulli_exp(gamma, rng))

    if gamma == 0:
        assert successes == SAMPLES
    else:
        error = Z_LIMIT * math.sqrt(expected * (1 - expected) / SAMPLES)
        assert abs(successes / SAMPLES - expected) <= error


def test_bernoulli_exp_rejects_negative_gamma() -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        sample_bernoulli_exp(Fraction(-1, 2), seeded_random(1))

    assert excinfo.value.value == Fraction(-1, 2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sigma_squared", [1, Fraction(9, 4), 4, 25.0])
def test_discrete_gaussian_variance_near_sigma_squared(
    seed: int, sigma_squared: Fraction | int | float
) -> None:
    rng = seeded_random(seed)
    variance, fourth = gaussian_moments(float(sigma_squared))

    draws = np.array([sample_discrete_gaussian(sigma_squared, rng) for _ in range(SAMPLES)], dtype=float)

    # For sigma^2 >= 1 the exact variance differs from sigma^2 by under 1e-6 relative.
    assert variance == pytest.approx(float(sigma_squared), rel=1e-6)
    assert abs(draws.mean()) <= Z_LIMIT * math.sqrt(variance / SAMPLES)
    variance_error = Z_LIMIT * math.sqrt((fourth - variance**2) / SAMPLES)
    assert abs(draws.var(ddof=1) - variance) <= variance_error


@pytest.mark.parametrize("bad", [0, -1, -0.5, Fraction(0), math.nan, math.inf, "2", True, None])
def test_sample_discrete_laplace_rejects_bad_scale(bad: object) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        sample_discrete_laplace(bad, seeded_random(1))  # type: ignore[arg-type]

    assert excinfo.value.name == "scale"
    assert excinfo.value.value is bad


def test_sample_discrete_laplace_message_shows_value() -> None:
    with pytest.raises(InvalidPrivacyParameter, match=r"^scale must be > 0; got -1$"):
        sample_discrete_laplace(-1, seeded_random(1))


@pytest.mark.parametrize("bad", [0, -2, math.nan, math.inf])
def test_sample_discrete_gaussian_rejects_bad_sigma(bad: float) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        sample_discrete_gaussian(bad, seeded_random(1))

    assert excinfo.value.name == "sigma_squared"


def test_mechanism_scale_is_exact_ratio() -> None:
    mechanism = DiscreteLaplaceMechanism(0.1, 3)

    assert mechanism.scale == Fraction(3) / Fraction(0.1)
    assert DiscreteLaplaceMechanism(0.5, 3).scale == 6


def test_mechanism_release_adds_noise_of_its_scale() -> None:
    mechanism = DiscreteLaplaceMechanism(0.5, 2)
    rng = seeded_random(8)
    values = [100, 0, 7] * 5000

    released = mechanism.release(values, rng)

    noise = np.array(released) - np.array(values)
    variance = discrete_laplace_variance(4)
    assert len(released) == len(values)
    assert abs(noise.mean()) <= Z_LIMIT * math.sqrt(variance / len(values))
    _, fourth = laplace_moments(4.0)
    assert abs(noise.var(ddof=1) - variance) <= Z_LIMIT * math.sqrt((fourth - variance**2) / len(values))


def test_mechanism_release_reproducible_with_seed() -> None:
    mechanism = DiscreteLaplaceMechanism(1.0, 1)

    first = mechanism.release([5, 5, 5], seeded_random(99))
    second = mechanism.release([5, 5, 5], seeded_random(99))

    assert first == second


def test_mechanism_epsilon_message() -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        DiscreteLaplaceMechanism(-1, 1)

    assert str(excinfo.value) == "epsilon must be in (0, 100]; got -1"
    assert (excinfo.value.name, excinfo.value.value) == ("epsilon", -1)


@pytest.mark.parametrize("epsilon", [0, 100.5, math.nan, math.inf, "1"])
def test_mechanism_rejects_epsilon_out_of_range(epsilon: object) -> None:
    with pytest.raises(InvalidPrivacyParameter):
        DiscreteLaplaceMechanism(epsilon, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("sensitivity", [0, -1, 1.5, True])
def test_mechanism_rejects_bad_sensitivity(sensitivity: object) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        DiscreteLaplaceMechanism(1.0, sensitivity)  # type: ignore[arg-type]

    assert excinfo.value.name == "l1_sensitivity"


def test_add_noise_accepts_numpy_integers() -> None:
    values = np.array([3, 4, 5], dtype=np.int64)

    noised = add_discrete_laplace_noise(values, scale=1, rng=seeded_random(4))

    assert all(type(v) is int for v in noised)
    assert len(noised) == 3


@pytest.mark.parametrize("bad", [1.5, "3", True, None])
def test_add_noise_rejects_non_integer_values(bad: object) -> None:
    source = IntegerOnlySource(1)

    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        add_discrete_laplace_noise([1, bad], scale=1, rng=source)  # type: ignore[list-item]

    assert excinfo.value.name == "values[1]"
    assert source.calls == 0
