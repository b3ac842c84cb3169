"""Tests for privacy.secagg.noise: the distributed discrete Gaussian and its accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privacy.errors import InvalidPrivacyParameter
from privacy.random import seeded_random
from privacy.secagg.noise import (
    DistributedGaussian,
    calibrate_distributed_gaussian,
    distributed_gaussian_rho,
    zcdp_to_epsilon,
)


def test_rho_matches_single_gaussian_for_large_variance() -> None:
    """With s² = 4 the correction τ is below 1e-16, so ρ = Δ2² / (2 m s²)."""
    rho = distributed_gaussian_rho(sigma_squared_per_site=4.0, sites=10, l1_sensitivity=3,
                                   l2_sensitivity=math.sqrt(3), dimension=100)

    assert rho == pytest.approx(3 / (2 * 10 * 4.0), rel=1e-12)


def test_rho_grows_when_fewer_sites_remain() -> None:
    kwargs = {"sigma_squared_per_site": 2.0, "l1_sensitivity": 1, "l2_sensitivity": 1, "dimension": 8}

    assert distributed_gaussian_rho(sites=5, **kwargs) > distributed_gaussian_rho(sites=10, **kwargs)


def test_rho_includes_tau_for_small_variance() -> None:
    """At s² = 0.25 the τ term is visible: ρ exceeds the plain Gaussian value."""
    rho = distributed_gaussian_rho(sigma_squared_per_site=0.25, sites=4, l1_sensitivity=1,
                                   l2_sensitivity=1, dimension=1000)

    assert rho > 1 / (2 * 4 * 0.25)


def test_zcdp_conversion_formula() -> None:
    assert zcdp_to_epsilon(0.5, 1e-6) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e6)))


@pytest.mark.parametrize(("epsilon", "sites"), [(1.0, 3), (0.5, 10), (4.0, 100)])
def test_calibration_meets_target_tightly(epsilon: float, sites: int) -> None:
    noise = calibrate_distributed_gaussian(epsilon=epsilon, delta=1e-6, min_sites=sites,
                                           l1_sensitivity=4, l2_sensitivity=2, dimension=64)

    achieved = noise.epsilon(delta=1e-6, l1_sensitivity=4, l2_sensitivity=2, dimension=64)

    assert achieved <= epsilon
    assert achieved > epsilon * 0.999


def test_more_sites_than_minimum_only_lowers_epsilon() -> None:
    noise = DistributedGaussian(sigma_squared_per_site=3.0, min_sites=5)
    kwargs = {"delta": 1e-6, "l1_sensitivity": 1, "l2_sensitivity": 1, "dimension": 4}

    assert noise.epsilon(sites=8, **kwargs) < noise.epsilon(**kwargs)


def test_sum_of_site_noise_has_target_variance() -> None:
    """Five sites of variance 2 sum to variance 10; 4000 draws put the estimate within 10%."""
    noise = DistributedGaussian(sigma_squared_per_site=2.0, min_sites=5)
    rng = seeded_random(11)

    total = sum(noise.add_noise(np.zeros(800, dtype=np.int64), rng) for _ in range(5))
    more = sum(noise.add_noise(np.zeros(3200, dtype=np.int64), rng) for _ in range(5))
    draws = np.concatenate([total, more])

    assert abs(draws.mean()) < 0.25
    assert draws.var() == pytest.approx(10.0, rel=0.1)


def test_add_noise_keeps_integers_and_shape() -> None:
    noise = DistributedGaussian(sigma_squared_per_site=1.0, min_sites=1)

    noised = noise.add_noise(np.arange(5), seeded_random(1))

    assert noised.dtype == np.int64
    assert noised.shape == (5,)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sigma_squared_per_site": 0.1, "min_sites": 2}, "sigma_squared_per_site"),
        ({"sigma_squared_per_site": 1.0, "min_sites": 0}, "min_sites"),
    ],
)
def test_invalid_noise_parameters_raise(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(InvalidPrivacyParameter) as excinfo:
        DistributedGaussian(**kwargs)  # type: ignore[arg-type]

    assert excinfo.value.name == name
