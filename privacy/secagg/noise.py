"""Distributed discrete Gaussian noise: each site adds a share, the sum carries the target noise.

In secure mode the hub sees only the sum over sites, so no single site needs to make its own
vector private on its own. Each site adds independent discrete Gaussian noise N_Z(0, s²) to
every entry; the sum over m sites then carries noise of variance close to m·s². The sum of
discrete Gaussians is not exactly a discrete Gaussian, and Kairouz, Liu and Steinke, "The
Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation"
(ICML 2021, Theorem 1) bound the gap: for inputs with L1 and L2 sensitivities Δ1 and Δ2 in
dimension d, the sum of m sites' noise gives ½ε²-concentrated DP (zCDP) with

    ε = min( sqrt(Δ2² / (m s²) + τ d / 2),  Δ1 / (sqrt(m) s) + τ d ),
    τ = 10 · Σ_{k=1}^{m-1} exp(-2π² s² k / (k + 1)).

τ falls fast with s²: about 5e-4 at s² = 1, 3e-8 at s² = 2 and 7e-17 at s² = 4, for
2 to 1,000 sites. It enters multiplied by d, so at s² = 1 a vector of 65,536 entries
would lose the guarantee entirely, while from s² = 2 on the guarantee is practically
that of one discrete Gaussian of variance m·s². The calibration below includes τ.

The noise is the discrete Gaussian, not Skellam or Pólya noise, because the package has exact
samplers for it from integer draws (``privacy.mechanisms`` one value at a time,
``privacy.fast_sampling`` for whole vectors). An exact Skellam needs an exact Poisson sampler,
and the Pólya split of the discrete Laplace needs Gamma variates. The package has neither
without floating point.

Dropouts. Noise is calibrated for ``min_sites`` contributions: each site adds
``sigma_squared / min_sites``. The protocol aborts below ``threshold`` sites, so with
``min_sites <= threshold`` every released sum carries at least the target variance. Sites
that drop before sending their masked input take their noise with them, and that is why
the calibration uses the minimum, not the number invited. More sites than the minimum only
add noise.

Collusion. A hub that colludes with c sites can subtract their noise. Calibrating with
``min_sites = threshold - c`` keeps the guarantee against such a coalition.

The zCDP bound becomes (ε, δ)-DP through ε = ρ + 2·sqrt(ρ·ln(1/δ)) (Bun and Steinke,
"Concentrated Differential Privacy", TCC 2016, Proposition 1.3), which is slightly loose but
simple to check.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from privacy.errors import InvalidPrivacyParameter
from privacy.fast_sampling import sample_discrete_gaussian_vector
from privacy.mechanisms import validate_epsilon
from privacy.random import RandomSource

__all__ = [
    "DistributedGaussian",
    "calibrate_distributed_gaussian",
    "distributed_gaussian_rho",
    "zcdp_to_epsilon",
]


def distributed_gaussian_rho(
    *, sigma_squared_per_site: float, sites: int, l1_sensitivity: float,
    l2_sensitivity: float, dimension: int,
) -> float:
    """Return the zCDP parameter ρ of the sum of ``sites`` sites' discrete Gaussian noise.

    Parameters
    ----------
    sigma_squared_per_site : float
        Variance parameter s² of each site's noise, >= 0.25 (the bound's own condition).
    sites : int
        Number of honest sites whose noise is in the sum, >= 1.
    l1_sensitivity, l2_sensitivity : float
        Sensitivities of the summed vector to one privacy unit, > 0.
    dimension : int
        Length d of the vector, >= 1.
    """
    if not sigma_squared_per_site >= 0.25:
        raise InvalidPrivacyParameter("sigma_squared_per_site", sigma_squared_per_site, ">= 0.25")
    if not isinstance(sites, numbers.Integral) or sites < 1:
        raise InvalidPrivacyParameter("sites", sites, "an integer >= 1")
    if not isinstance(dimension, numbers.Integral) or dimension < 1:
        raise InvalidPrivacyParameter("dimension", dimension, "an integer >= 1")
    if not (l1_sensitivity > 0 and l2_sensitivity > 0):
        raise InvalidPrivacyParameter("sensitivity", (l1_sensitivity, l2_sensitivity), "> 0")

    s2 = float(sigma_squared_per_site)
    tau = 10 * math.fsum(math.exp(-2 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, sites))
    eps_l2 = math.sqrt(l2_sensitivity**2 / (sites * s2) + tau * dimension / 2)
    eps_l1 = l1_sensitivity / (math.sqrt(sites * s2)) + tau * dimension
    return min(eps_l2, eps_l1) ** 2 / 2


def zcdp_to_epsilon(rho: float, delta: float) -> float:
    """Return ε with ρ-zCDP implying (ε, δ)-DP: ρ + 2·sqrt(ρ·ln(1/δ))."""
    if not rho >= 0:
        raise InvalidPrivacyParameter("rho", rho, ">= 0")
    if not 0 < delta < 1:
        raise InvalidPrivacyParameter("delta", delta, "in (0, 1)")
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


def calibrate_distributed_gaussian(
    *, epsilon: float, delta: float, min_sites: int, l1_sensitivity: float,
    l2_sensitivity: float, dimension: int,
) -> DistributedGaussian:
    """Return the smallest per-site noise whose sum over ``min_sites`` sites is (ε, δ)-DP.

    The per-site variance is found by bisection to a relative precision of 1e-6, then
    rounded up, so the returned noise meets the target.
    """
    epsilon = validate_epsilon(epsilon)
    if not 0 < delta < 1:
        raise InvalidPrivacyParameter("delta", delta, "in (0, 1)")

    def epsilon_at(s2: float) -> float:
        rho = distributed_gaussian_rho(sigma_squared_per_site=s2, sites=min_sites,
                                       l1_sensitivity=l1_sensitivity, l2_sensitivity=l2_sensitivity,
                                       dimension=dimension)
        return zcdp_to_epsilon(rho, delta)

    low, high = 0.25, 1.0
    while epsilon_at(high) > epsilon:
        low, high = high, high * 2
        if high > 1e15:
            raise InvalidPrivacyParameter("epsilon", epsilon, "reachable with finite noise")
    if epsilon_at(low) <= epsilon:
        high = low
    while high - low > 1e-6 * high:
        middle = (low + high) / 2
        low, high = (low, middle) if epsilon_at(middle) <= epsilon else (middle, high)
    return DistributedGaussian(sigma_squared_per_site=high, min_sites=min_sites)


@dataclass(frozen=True)
class DistributedGaussian:
    """One site's share of the distributed discrete Gaussian noise.

    Parameters
    ----------
    sigma_squared_per_site : float
        Variance parameter each site uses, >= 0.25.
    min_sites : int
        Number of honest sites the guarantee assumes are in every released sum, >= 1.
    """

    sigma_squared_per_site: float
    min_sites: int

    def __post_init__(self) -> None:
        if not isinstance(self.min_sites, numbers.Integral) or self.min_sites < 1:
            raise InvalidPrivacyParameter("min_sites", self.min_sites, "an integer >= 1")
        if not self.sigma_squared_per_site >= 0.25:
            raise InvalidPrivacyParameter("sigma_squared_per_site", self.sigma_squared_per_site, ">= 0.25")

    def add_noise(self, values: np.ndarray, rng: RandomSource) -> np.ndarray:
        """Return ``values`` (integers) plus this site's independent noise on each entry."""
        array = np.asarray(values)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise ValueError("values must be a one-dimensional vector of integers")
        # The vectorised sampler rounds s² up to a multiple of 1/4: more noise, same guarantee.
        noise = sample_discrete_gaussian_vector(Fraction(self.sigma_squared_per_site), array.size, rng)
        return array.astype(np.int64) + noise

    def epsilon(self, *, delta: float, l1_sensitivity: float, l2_sensitivity: float,
                dimension: int, sites: int | None = None) -> float:
        """Return the ε at ``delta`` of a sum with ``sites`` honest sites (default ``min_sites``)."""
        count = self.min_sites if sites is None else sites
        rho = distributed_gaussian_rho(sigma_squared_per_site=self.sigma_squared_per_site, sites=count,
                                       l1_sensitivity=l1_sensitivity, l2_sensitivity=l2_sensitivity,
                                       dimension=dimension)
        return zcdp_to_epsilon(rho, delta)
