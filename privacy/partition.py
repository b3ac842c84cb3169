"""Differentially private partition selection by discrete Laplace thresholding.

An observable (the partition key) may be released only if enough distinct units saw
it: releasing a key seen by one entity would reveal that entity's activity even with
a noised count beside it. Following Korolova, Kenthapadi, Mishra and Ntoulas,
"Releasing Search Queries and Clicks Privately" (WWW 2009), and Wilson et al.,
"Differentially Private SQL with Bounded User Contribution" (PoPETs 2020), each key's
distinct-unit count gets discrete Laplace noise and only keys whose noised count
reaches a threshold tau are released, with that noised count.

Derivation of tau. Each unit appears in at most k = ``max_partitions_per_unit`` keys,
so the vector of counts has L1 sensitivity k and the noise scale is t = k / epsilon,
p = exp(-1/t). Removing one unit changes the counts of the keys present in both
neighbouring inputs by at most one each, which the noise covers with epsilon. It can
also make up to k keys disappear, namely those that unit alone held (count 1). Such a
key is released when 1 + Z >= tau. For the discrete Laplace,
P(Z >= m) = p^m / (1 + p) for m >= 1, so choosing

    tau = 1 + ceil(t * ln(k / (delta * (1 + p))))

gives P(release) <= delta / k for each such key, and at most delta over the k keys.
The release is therefore (epsilon, delta)-DP for the unit.

The threshold is computed in floating point, which is fine because it depends only
on the parameters, not on the data. The noise is exact (see privacy.mechanisms).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Hashable, Mapping
from fractions import Fraction
from typing import TypeVar

from privacy.errors import InvalidPrivacyParameter
from privacy.mechanisms import sample_discrete_laplace, validate_epsilon
from privacy.random import RandomSource

__all__ = ["MAX_PARTITION_DELTA", "partition_threshold", "select_partitions"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

# With delta <= 1/2 and k >= 1 the logarithm in the threshold is positive, so
# tau >= 2 and the tail formula P(Z >= m) = p^m / (1 + p) (valid for m >= 1)
# applies. Larger deltas give no meaningful protection anyway.
MAX_PARTITION_DELTA = 0.5


def partition_threshold(*, epsilon: float, delta: float, max_partitions_per_unit: int) -> int:
    """Return the release threshold tau for noised distinct-unit counts.

    Parameters
    ----------
    epsilon : float
        Privacy parameter of the selection, in (0, 100].
    delta : float
        Probability bound over all keys held by a single unit, in (0, 0.5].
    max_partitions_per_unit : int
        Maximum number of keys one unit contributes to (k), >= 1.

    Returns
    -------
    int
        tau = 1 + ceil(t * ln(k / (delta * (1 + p)))) with t = k / epsilon and
        p = exp(-1/t); always >= 2.

    Raises
    ------
    InvalidPrivacyParameter
        If a parameter is outside its range.
    """
    epsilon = validate_epsilon(epsilon)
    delta = _validate_delta(delta)
    k = _validate_max_partitions(max_partitions_per_unit)

    t = k / epsilon
    p = math.exp(-1 / t)
    return 1 + math.ceil(t * math.log(k / (delta * (1 + p))))


def select_partitions(
    counts: Mapping[K, int],
    *,
    epsilon: float,
    delta: float,
    max_partitions_per_unit: int,
    rng: RandomSource,
) -> dict[K, int]:
    """Noise each key's distinct-unit count and keep the keys that reach the threshold.

    Parameters
    ----------
    counts : Mapping[K, int]
        Number of distinct units that contributed each key, each >= 0. The caller must
        enforce that every unit is counted in at most ``max_partitions_per_unit``
        keys and at most once per key (see privacy.bounding). This function sees only
        the counts, so it cannot check that bound.
    epsilon : float
        Privacy parameter, in (0, 100].
    delta : float
        In (0, 0.5]; see :func:`partition_threshold`.
    max_partitions_per_unit : int
        The enforced bound k, >= 1.
    rng : RandomSource
        Integer source; :func:`privacy.random.system_random` in production.

    Returns
    -------
    dict[K, int]
        Noised counts of the released keys only, in the input order. Every value is
        >= the threshold, so >= 2.

    Raises
    ------
    InvalidPrivacyParameter
        If a parameter is outside its range or a count is not a non-negative integer.
    """
    tau = partition_threshold(
        epsilon=epsilon, delta=delta, max_partitions_per_unit=max_partitions_per_unit
    )
    scale = Fraction(max_partitions_per_unit) / Fraction(float(epsilon))

    # Check every count before drawing any noise, so a bad input releases nothing.
    checked: list[tuple[K, int]] = []
    for key, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise InvalidPrivacyParameter(f"counts[{key!r}]", count, "an integer >= 0")
        checked.append((key, int(count)))

    released: dict[K, int] = {}
    for key, count in checked:
        noised = count + sample_discrete_laplace(scale, rng)
        if noised >= tau:
            released[key] = noised

    log.debug(
        "partition selection released %d of %d keys at threshold %d (epsilon %g, delta %g, k %d)",
        len(released), len(checked), tau, epsilon, delta, max_partitions_per_unit,
    )
    return released


def _validate_delta(delta: float) -> float:
    rule = f"in (0, {MAX_PARTITION_DELTA:g}]"
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise InvalidPrivacyParameter("delta", delta, rule)
    as_float = float(delta)
    if not (0 < as_float <= MAX_PARTITION_DELTA):
        raise InvalidPrivacyParameter("delta", delta, rule)
    return as_float


def _validate_max_partitions(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidPrivacyParameter("max_partitions_per_unit", value, "an integer >= 1")
    return int(value)
