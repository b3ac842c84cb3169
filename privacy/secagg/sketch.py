"""Observables in secure mode: a summed count-min sketch, then a gated reveal of heavy values.

The hub must learn which observables many entities across sites contacted without seeing
any site's list. Each site hashes its observables into a count-min sketch (Cormode and
Muthukrishnan, "An Improved Data Stream Summary: The Count-Min Sketch", J. Algorithms
2005): ``rows`` rows of ``width`` buckets, one hash function per row. A bucket contains the
number of distinct privacy units of the site with an observable in that bucket, so one
unit adds at most 1 to a bucket. Sites add distributed noise (:mod:`privacy.secagg.noise`)
and the sketches are summed by secure aggregation, so the hub sees only the noised sum.

Sensitivity. A unit contributes at most ``max_observables_per_unit`` = k observables, each
in one bucket per row, so it changes at most k buckets per row by 1: L1 <= rows·k and
L2 <= sqrt(rows·k).

We use unsigned count-min rows rather than a signed count sketch because the counts are
non-negative. An unsigned bucket only overestimates, so "every bucket of a value clears the
threshold" never misses a value whose own count clears it. With signs, counts of colliding
values would cancel.

Reveal. Buckets whose noised sum clears ``threshold`` are public (post-processing of a DP
output). The hub still needs the values behind them. A site that sent "I hold value v"
for every held value in a heavy bucket would reveal to the hub that at least one of its
entities contacted v, which is not covered by the sketch's guarantee. So a site reveals a
value only if it is in heavy buckets in every row *and* passes the site's own DP partition
selection (:func:`privacy.partition.select_partitions`), whose (ε, δ) the site charges as in
plain mode. The reveal is then a function of two DP releases, and the hub learns nothing
from it beyond them. The sketch makes the reveal more selective (fewer values sent) and
gives the hub cross-site counts in which no site's contribution can be singled out.

Hash keys are public and change with the round, so collisions do not repeat across rounds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from privacy.partition import select_partitions
from privacy.random import RandomSource

__all__ = ["CountMinSketch"]


@dataclass(frozen=True)
class CountMinSketch:
    """Shape and hashing of the round's sketch, the same at the hub and every site.

    Parameters
    ----------
    round_id : str
        Keys the hash functions.
    rows : int, default 2
        Number of hash functions, in [1, 8]. Each row multiplies the sensitivity, and so
        the noise needed, but a value is wrongly called heavy only if it collides with
        heavy values in every row.
    width : int, default 32768
        Buckets per row, in [16, 2^22]. Two rows of 32768 buckets are 65,536 words of
        secure aggregation. With up to 3,000 distinct observables per round, a given
        observable shares its bucket in a row with another with probability below 9 %.
    """

    round_id: str
    rows: int = 2
    width: int = 32768

    def __post_init__(self) -> None:
        if not isinstance(self.rows, int) or not 1 <= self.rows <= 8:
            raise ValueError(f"sketch rows must be in [1, 8]; got {self.rows!r}")
        if not isinstance(self.width, int) or not 16 <= self.width <= 1 << 22:
            raise ValueError(f"sketch width must be in [16, 2^22]; got {self.width!r}")

    @property
    def length(self) -> int:
        """Number of words in the flattened sketch."""
        return self.rows * self.width

    def buckets(self, value: str) -> tuple[int, ...]:
        """Return the flattened index of ``value``'s bucket in each row."""
        digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8 * self.rows,
                                 key=self.round_id.encode("utf-8")[:64]).digest()
        return tuple(
            row * self.width + int.from_bytes(digest[8 * row: 8 * row + 8], "big") % self.width
            for row in range(self.rows)
        )

    def sensitivity(self, max_observables_per_unit: int) -> tuple[int, float]:
        """Return the (L1, L2) sensitivity of the sketch to one unit."""
        if not isinstance(max_observables_per_unit, int) or max_observables_per_unit < 1:
            raise ValueError(f"max_observables_per_unit must be an integer >= 1; got {max_observables_per_unit!r}")
        contributions = self.rows * max_observables_per_unit
        return contributions, math.sqrt(contributions)

    def build(self, unit_values: Mapping[object, Iterable[str]]) -> np.ndarray:
        """Return the sketch of distinct-unit counts for units whose observables are already bounded.

        Parameters
        ----------
        unit_values : mapping of unit to iterable of str
            Each unit's observables, at most ``max_observables_per_unit`` per unit (see
            :func:`privacy.bounding.bound_keys_per_unit`).
        """
        counts = np.zeros(self.length, dtype=np.int64)
        for values in unit_values.values():
            # A unit counts once per bucket even when two of its values collide there.
            touched = {index for value in values for index in self.buckets(value)}
            for index in touched:
                counts[index] += 1
        return counts

    def heavy_buckets(self, summed: np.ndarray, *, threshold: int) -> frozenset[int]:
        """Return the indices whose summed (noised) count is at least ``threshold``."""
        summed = np.asarray(summed)
        if summed.shape != (self.length,):
            raise ValueError(f"summed sketch must have {self.length} entries; got shape {summed.shape}")
        return frozenset(int(i) for i in np.flatnonzero(summed >= threshold))

    def candidates(self, values: Iterable[str], heavy: frozenset[int]) -> list[str]:
        """Return the values whose bucket is heavy in every row, sorted."""
        return sorted({v for v in values if all(i in heavy for i in self.buckets(v))})

    def estimate(self, summed: np.ndarray, value: str) -> int:
        """Return the count-min estimate of ``value``: its smallest bucket."""
        return int(min(summed[i] for i in self.buckets(value)))

    def reveal(
        self,
        unit_counts: Mapping[str, int],
        heavy: frozenset[int],
        *,
        epsilon: float,
        delta: float,
        max_partitions_per_unit: int,
        rng: RandomSource,
    ) -> dict[str, int]:
        """Return the site's values that are heavy in every row and pass its own partition selection.

        Parameters
        ----------
        unit_counts : mapping of str to int
            Distinct-unit count of each value at this site, after contribution bounding.
        heavy : frozenset of int
            Output of :meth:`heavy_buckets` on the released sum; public.
        epsilon, delta, max_partitions_per_unit : see :func:`privacy.partition.select_partitions`
            The site charges this (epsilon, delta) to its ledger, as in plain mode.
        rng : RandomSource
            Secure generator for the selection noise.

        Returns
        -------
        dict of str to int
            Revealed values with their locally noised counts.

        Notes
        -----
        Restricting the selection to values in heavy buckets depends only on the public
        heavy set, so the result is (epsilon, delta)-DP for one unit of this site, composed
        with the sketch's own guarantee.
        """
        candidates = set(self.candidates(unit_counts, heavy))
        return select_partitions(
            {value: count for value, count in unit_counts.items() if value in candidates},
            epsilon=epsilon, delta=delta, max_partitions_per_unit=max_partitions_per_unit, rng=rng,
        )
