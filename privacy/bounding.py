"""Contribution bounding: cap what one privacy unit adds to a release.

The sensitivity of every DP release follows from these caps and from nothing else.
With each unit in at most ``max_keys`` distinct keys, a vector of distinct-unit
counts changes by at most ``max_keys`` in L1 norm when one unit is added or removed.
With at most ``max_items`` items per unit, a histogram of those items changes by at
most ``max_items``. The caps must be applied before any count is computed, and the
choice of what to keep must not depend on other units' data.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from privacy.errors import InvalidPrivacyParameter
from privacy.random import RandomSource

__all__ = ["bound_keys_per_unit", "sample_per_unit"]

U = TypeVar("U", bound=Hashable)
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def bound_keys_per_unit(unit_keys: Mapping[U, Sequence[K]], *, max_keys: int) -> dict[U, list[K]]:
    """Keep at most ``max_keys`` distinct keys per unit, the first ones in the order given.

    Parameters
    ----------
    unit_keys : Mapping[U, Sequence[K]]
        Keys of each unit, ordered by the caller's own per-unit priority (for
        example, highest local anomaly score first). The priority must come from the
        unit's own data only.
    max_keys : int
        Maximum number of distinct keys kept per unit, >= 1.

    Returns
    -------
    dict[U, list[K]]
        For each unit, its first ``max_keys`` distinct keys. A repeated key counts
        once, at its first position, because counts built from the result are
        distinct-unit counts.

    Raises
    ------
    InvalidPrivacyParameter
        If ``max_keys`` is not an integer >= 1.
    """
    limit = _validate_limit("max_keys", max_keys)
    bounded: dict[U, list[K]] = {}
    for unit, keys in unit_keys.items():
        kept: list[K] = []
        seen: set[K] = set()
        for key in keys:
            if len(kept) == limit:
                break
            if key in seen:
                continue
            seen.add(key)
            kept.append(key)
        bounded[unit] = kept
    return bounded


def sample_per_unit(
    items: Mapping[U, Sequence[T]], *, max_items: int, rng: RandomSource
) -> dict[U, list[T]]:
    """Keep a uniform random sample of at most ``max_items`` items per unit.

    Parameters
    ----------
    items : Mapping[U, Sequence[T]]
        Items of each unit, e.g. its feature windows in a round.
    max_items : int
        Maximum number of items kept per unit, >= 1.
    rng : RandomSource
        Integer source; :func:`privacy.random.system_random` in production.

    Returns
    -------
    dict[U, list[T]]
        For each unit, all its items when it has at most ``max_items``, otherwise a
        uniform sample of ``max_items`` of them without replacement. Kept items stay
        in their input order.

    Raises
    ------
    InvalidPrivacyParameter
        If ``max_items`` is not an integer >= 1.
    """
    limit = _validate_limit("max_items", max_items)
    sampled: dict[U, list[T]] = {}
    for unit, unit_items in items.items():
        population = list(unit_items)
        if len(population) <= limit:
            sampled[unit] = population
            continue

        # Partial Fisher-Yates over positions: the first `limit` positions after
        # `limit` swaps are a uniform sample without replacement.
        positions = list(range(len(population)))
        for i in range(limit):
            j = i + rng.randbelow(len(positions) - i)
            positions[i], positions[j] = positions[j], positions[i]
        sampled[unit] = [population[p] for p in sorted(positions[:limit])]
    return sampled


def _validate_limit(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidPrivacyParameter(name, value, "an integer >= 1")
    return int(value)
