"""Exact discrete Laplace and discrete Gaussian noise from integer draws.

Textbook Laplace noise computed in floating point leaks the true value through the
low-order bits of the result, because the set of doubles a given true value can
produce depends on that value (Mironov, "On Significance of the Least Significant
Bits for Differential Privacy", CCS 2012). We add integer noise to integer counts
instead, and sample it exactly with the algorithms of Canonne, Kamath and Steinke,
"The Discrete Gaussian for Differential Privacy" (NeurIPS 2020):

* Algorithm 1 draws Bernoulli(exp(-gamma)) for a rational gamma >= 0,
* Algorithm 2 draws the discrete Laplace distribution, P(z) ∝ exp(-|z| / scale),
* Algorithm 3 draws the discrete Gaussian, P(z) ∝ exp(-z² / (2 sigma²)).

Every probability is a :class:`fractions.Fraction` and every draw is an integer from
``rng.randbelow`` or ``rng.getrandbits``, so no float appears on the sampling path.

A float parameter (a scale of 2.5, or an epsilon of 0.1) is converted with
``Fraction(value)``, which is exact. The sampler uses precisely the binary value that
the float stores, so the guarantee is the one for that float and no rounding weakens
it. Adding integer noise of scale ``l1_sensitivity / epsilon`` to an integer
query whose L1 sensitivity is ``l1_sensitivity`` is epsilon-DP (the geometric
mechanism of Ghosh, Roughgarden and Sundararajan, STOC 2009).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from fractions import Fraction

from privacy.errors import InvalidPrivacyParameter
from privacy.random import RandomSource

__all__ = [
    "DiscreteLaplaceMechanism",
    "MAX_EPSILON",
    "add_discrete_laplace_noise",
    "discrete_laplace_variance",
    "sample_bernoulli_exp",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
]

# Beyond epsilon 100 the noise is almost always zero, so the release is the raw
# value. Such a setting is a configuration mistake, not a privacy choice.
MAX_EPSILON = 100.0


def to_exact_fraction(name: str, value: Fraction | int | float) -> Fraction:
    """Convert a positive finite parameter to an exact Fraction.

    Parameters
    ----------
    name : str
        Parameter name for the error message.
    value : Fraction, int or float
        Must be finite and > 0. Floats are converted exactly (no rounding).

    Raises
    ------
    InvalidPrivacyParameter
        If the value is not a finite positive number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidPrivacyParameter(name, value, "a positive finite number")
    if isinstance(value, numbers.Rational):
        exact = Fraction(value.numerator, value.denominator)
    else:
        if not math.isfinite(float(value)):
            raise InvalidPrivacyParameter(name, value, "a positive finite number")
        exact = Fraction(float(value))
    if exact <= 0:
        raise InvalidPrivacyParameter(name, value, "> 0")
    return exact


def sample_bernoulli_exp(gamma: Fraction, rng: RandomSource) -> bool:
    """Draw Bernoulli(exp(-gamma)) exactly (Canonne, Kamath, Steinke 2020, Algorithm 1).

    Parameters
    ----------
    gamma : Fraction
        Rational exponent, >= 0.
    rng : RandomSource
        Integer source.

    Returns
    -------
    bool
        True with probability exp(-gamma).
    """
    if gamma < 0:
        raise InvalidPrivacyParameter("gamma", gamma, ">= 0")
    return _bernoulli_exp(gamma.numerator, gamma.denominator, rng)


def _bernoulli_exp(numerator: int, denominator: int, rng: RandomSource) -> bool:
    # For gamma > 1, exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma))):
    # every factor is a Bernoulli in [0, 1] drawn by the loop below.
    whole, rest = divmod(numerator, denominator)
    for _ in range(whole):
        if not _bernoulli_exp_at_most_one(1, 1, rng):
            return False
    return _bernoulli_exp_at_most_one(rest, denominator, rng)


def _bernoulli_exp_at_most_one(numerator: int, denominator: int, rng: RandomSource) -> bool:
    # For gamma in [0, 1], count K while Bernoulli(gamma / K) succeeds. The stopping
    # index K is odd with probability sum_k (-gamma)^k / k! = exp(-gamma).
    k = 1
    while rng.randbelow(denominator * k) < numerator:
        k += 1
    return k % 2 == 1


def _sample_discrete_laplace_exact(t: int, s: int, rng: RandomSource) -> int:
    """Draw from P(z) ∝ exp(-|z| * s / t) for integers s, t >= 1 (Algorithm 2)."""
    while True:
        # U + t*V is geometric with parameter exp(-1/t): U is the remainder modulo t
        # (weighted by rejection with exp(-U/t)), V the quotient (geometric exp(-1)).
        u = rng.randbelow(t)
        if not _bernoulli_exp(u, t, rng):
            continue
        v = 0
        while _bernoulli_exp_at_most_one(1, 1, rng):
            v += 1
        magnitude = (u + t * v) // s

        # A random sign; rejecting "negative zero" keeps P(0) at its right weight.
        negative = rng.getrandbits(1) == 1
        if negative and magnitude == 0:
            continue
        return -magnitude if negative else magnitude


def sample_discrete_laplace(scale: Fraction | int | float, rng: RandomSource) -> int:
    """Draw one integer with P(z) proportional to exp(-|z| / scale).

    Parameters
    ----------
    scale : Fraction, int or float
        Scale, > 0 and finite. A float is converted exactly with ``Fraction(scale)``.
    rng : RandomSource
        Integer source; :func:`privacy.random.system_random` in production.

    Returns
    -------
    int
        The noise value.

    Raises
    ------
    InvalidPrivacyParameter
        If ``scale`` is not a positive finite number.

    Notes
    -----
    With p = exp(-1/scale) the variance is 2p / (1 - p)² and
    P(Z >= k) = p^k / (1 + p) for k >= 1.
    """
    exact = to_exact_fraction("scale", scale)
    return _sample_discrete_laplace_exact(exact.numerator, exact.denominator, rng)


def sample_discrete_gaussian(sigma_squared: Fraction | int | float, rng: RandomSource) -> int:
    """Draw one integer with P(z) proportional to exp(-z² / (2 sigma_squared)).

    Parameters
    ----------
    sigma_squared : Fraction, int or float
        Variance parameter, > 0 and finite; a float is converted exactly.
    rng : RandomSource
        Integer source.

    Returns
    -------
    int
        The noise value.

    Raises
    ------
    InvalidPrivacyParameter
        If ``sigma_squared`` is not a positive finite number.

    Notes
    -----
    Algorithm 3 of Canonne, Kamath and Steinke: propose from a discrete Laplace of
    integer scale t = floor(sigma) + 1 and accept with probability
    exp(-(|y| - sigma²/t)² / (2 sigma²)). The variance of the result is below
    sigma_squared; for sigma_squared >= 1 the relative gap is below 1e-6 (2.1e-7 at
    sigma_squared = 1, computed by summing the probability mass function).
    """
    sigma2 = to_exact_fraction("sigma_squared", sigma_squared)

    # floor(sqrt(x)) == isqrt(floor(x)) for x >= 0, so t needs no float square root.
    t = math.isqrt(sigma2.numerator // sigma2.denominator) + 1
    while True:
        y = _sample_discrete_laplace_exact(t, 1, rng)
        gamma = (abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        if _bernoulli_exp(gamma.numerator, gamma.denominator, rng):
            return y


def add_discrete_laplace_noise(
    values: Sequence[int], *, scale: Fraction | int | float, rng: RandomSource
) -> list[int]:
    """Return each value plus independent discrete Laplace noise of the given scale.

    Parameters
    ----------
    values : Sequence[int]
        Integer values (Python or numpy integers; bool is rejected).
    scale : Fraction, int or float
        Noise scale, > 0.
    rng : RandomSource
        Integer source.

    Returns
    -------
    list[int]
        Noised values, in the input order.

    Raises
    ------
    InvalidPrivacyParameter
        If ``scale`` is invalid or a value is not an integer.
    """
    exact = to_exact_fraction("scale", scale)
    integers = _as_integers(values)
    return [
        value + _sample_discrete_laplace_exact(exact.numerator, exact.denominator, rng)
        for value in integers
    ]


def discrete_laplace_variance(scale: Fraction | int | float) -> float:
    """Return the variance 2p / (1 - p)² of the discrete Laplace, p = exp(-1/scale).

    For planning and reporting only; sampling never uses this float.
    """
    exact = to_exact_fraction("scale", scale)
    p = math.exp(-1 / float(exact))
    return 2 * p / (1 - p) ** 2


class DiscreteLaplaceMechanism:
    """Epsilon-DP release of an integer vector with bounded L1 sensitivity.

    Parameters
    ----------
    epsilon : float
        Privacy parameter of one release, in (0, 100].
    l1_sensitivity : int
        Maximum L1 distance between the vectors of two neighbouring inputs (one
        unit added or removed), >= 1. It follows from the contribution bounds, e.g.
        a histogram in which each unit adds at most ``max_windows_per_entity``
        windows has sensitivity ``max_windows_per_entity``.

    Attributes
    ----------
    scale : Fraction
        Exact noise scale ``l1_sensitivity / epsilon``.
    """

    def __init__(self, epsilon: float, l1_sensitivity: int) -> None:
        self.epsilon = validate_epsilon(epsilon)
        if isinstance(l1_sensitivity, bool) or not isinstance(l1_sensitivity, numbers.Integral):
            raise InvalidPrivacyParameter("l1_sensitivity", l1_sensitivity, "an integer >= 1")
        if l1_sensitivity < 1:
            raise InvalidPrivacyParameter("l1_sensitivity", l1_sensitivity, "an integer >= 1")
        self.l1_sensitivity = int(l1_sensitivity)
        self.scale = Fraction(self.l1_sensitivity) / Fraction(self.epsilon)

    def release(self, values: Sequence[int], rng: RandomSource) -> list[int]:
        """Return the values with noise of scale ``self.scale`` added to each."""
        return add_discrete_laplace_noise(values, scale=self.scale, rng=rng)

    def __repr__(self) -> str:
        return (
            f"DiscreteLaplaceMechanism(epsilon={self.epsilon!r}, "
            f"l1_sensitivity={self.l1_sensitivity!r})"
        )


def validate_epsilon(epsilon: float, *, name: str = "epsilon") -> float:
    """Return epsilon as a float if it is in (0, MAX_EPSILON], else raise.

    Raises
    ------
    InvalidPrivacyParameter
        ``"epsilon must be in (0, 100]; got -1"``.
    """
    rule = f"in (0, {MAX_EPSILON:g}]"
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise InvalidPrivacyParameter(name, epsilon, rule)
    as_float = float(epsilon)
    if not (0 < as_float <= MAX_EPSILON):
        raise InvalidPrivacyParameter(name, epsilon, rule)
    return as_float


def _as_integers(values: Sequence[int]) -> list[int]:
    integers = []
    for position, value in enumerate(values):
        if isinstance(value, bool):
            raise InvalidPrivacyParameter(f"values[{position}]", value, "an integer")
        try:
            integers.append(operator.index(value))
        except TypeError as err:
            raise InvalidPrivacyParameter(f"values[{position}]", value, "an integer") from err
    return integers
