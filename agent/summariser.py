"""Build one round's differentially private summary from the site's scored windows.

Every released number passes through a discrete Laplace mechanism whose sensitivity comes from
contribution bounds enforced here, before any count is taken:

- each privacy unit keeps at most ``max_windows_per_entity`` windows in the round (a uniform
  sample from the secure generator), and
- each unit keeps at most ``max_observables_per_entity`` observables, its most anomalous ones.

The unit is the entity (one internal host) by default. With ``unit: entity-window`` every
window of a host is a unit of its own; the per-host guarantee over a round is then epsilon
times the number of windows by group privacy, which the summary states.

The round's epsilon is split between three releases, all pure epsilon-DP:

======================  ==========================  ======================================
release                 sensitivity (L1)            epsilon
======================  ==========================  ======================================
score histogram         windows per unit            ``histogram_share * epsilon``
observable counts       observables per unit        ``count_share * epsilon``
observable score sums   observables per unit * Q    ``score_share * epsilon``
======================  ==========================  ======================================

Observables are released by DP partition selection on their noised distinct-unit counts;
a count held by a single unit clears the threshold with probability at most
``delta / max_observables_per_entity`` per observable, which is where the round's delta goes.
The window count is the sum of the noised histogram, which is post-processing and costs no
budget. First and last seen are the round's bounds: finer timing would need a mechanism of
its own.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from agent.config import PrivacySection
from agent.detector import ScoredWindow
from agent.observables import split_observable_key
from privacy.bounding import bound_keys_per_unit, sample_per_unit
from privacy.mechanisms import DiscreteLaplaceMechanism
from privacy.partition import partition_threshold, select_partitions
from privacy.random import RandomSource

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 10
BIN_EDGES: tuple[float, ...] = tuple(i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1))
# Calibrated scores are summed as integers in [0, SCORE_QUANTUM]; a step of 0.01 is finer
# than the noise at any useful epsilon.
SCORE_QUANTUM = 100


@dataclass(frozen=True)
class EvidenceRelease:
    observable_type: str
    value: str
    noised_unit_count: int
    noised_mean_score: float


@dataclass(frozen=True)
class RoundRelease:
    """The release of one round, before it is wrapped as STIX and signed."""

    round_start: int
    round_end: int
    histogram: tuple[int, ...]
    noised_window_count: int
    evidence: tuple[EvidenceRelease, ...]
    epsilon: float
    delta: float
    partition_threshold: int
    units: int  # true number of units (stays on the site; logged at DEBUG only)


@dataclass(frozen=True)
class BoundedRound:
    """One round's exact counts after contribution bounding, before any noise. They never leave the site."""

    kept: dict[object, list[ScoredWindow]]
    histogram: tuple[int, ...]
    unit_observables: dict[object, list[str]]
    unit_counts: dict[str, int]
    score_sums: dict[str, int]


def bound_round(windows: list[ScoredWindow], *, privacy: PrivacySection, rng: RandomSource) -> BoundedRound:
    """Enforce the contribution bounds of the module docstring and count what remains.

    Plain mode noises these counts on the site. Secure mode adds a share of distributed noise
    and sums them across sites first.
    """
    per_unit_windows = privacy.max_windows_per_entity if privacy.unit == "entity" else 1
    max_observables = privacy.max_observables_per_entity

    # Group windows into privacy units, then bound each unit's windows.
    units: dict[object, list[ScoredWindow]] = defaultdict(list)
    for window in windows:
        unit = window.entity if privacy.unit == "entity" else (window.entity, window.start)
        units[unit].append(window)
    ordered_units = {unit: sorted(ws, key=lambda w: w.start) for unit, ws in units.items()}
    kept = sample_per_unit(ordered_units, max_items=per_unit_windows, rng=rng)

    # Histogram of calibrated scores: one unit moves at most per_unit_windows counts.
    counts = [0] * HISTOGRAM_BINS
    for unit_windows in kept.values():
        for window in unit_windows:
            counts[min(int(window.score * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1

    # Each unit's candidate observables, most anomalous first; the unit's score for an
    # observable is the highest calibrated score among its windows that contacted it.
    unit_scores: dict[object, dict[str, float]] = {}
    for unit, unit_windows in kept.items():
        best: dict[str, float] = {}
        contacts: dict[str, int] = defaultdict(int)
        for window in unit_windows:
            for remote, n in window.remotes.items():
                best[remote] = max(best.get(remote, 0.0), window.score)
                contacts[remote] += n
        ranked = sorted(best, key=lambda r: (-best[r], -contacts[r], r))
        unit_scores[unit] = {r: best[r] for r in ranked}
    bounded = bound_keys_per_unit({u: list(s) for u, s in unit_scores.items()}, max_keys=max_observables)

    # Distinct-unit counts and quantised score sums per observable.
    unit_counts: dict[str, int] = defaultdict(int)
    score_sums: dict[str, int] = defaultdict(int)
    for unit, remotes in bounded.items():
        for remote in remotes:
            unit_counts[remote] += 1
            score_sums[remote] += round(unit_scores[unit][remote] * SCORE_QUANTUM)
    return BoundedRound(kept=kept, histogram=tuple(counts), unit_observables={u: list(r) for u, r in bounded.items()},
                        unit_counts=dict(unit_counts), score_sums=dict(score_sums))


def summarise_round(
    windows: list[ScoredWindow],
    *,
    round_start: int,
    round_seconds: int,
    privacy: PrivacySection,
    rng: RandomSource,
) -> RoundRelease:
    """Release the DP summary of one round's scored windows.

    Parameters
    ----------
    windows : list of ScoredWindow
        Every scored window whose start lies in the round.
    round_start : int
        Round start, epoch seconds (a multiple of ``round_seconds``).
    privacy : PrivacySection
        Budget split, bounds and unit.
    rng : RandomSource
        Secure generator in production. Tests inject a seeded one.
    """
    epsilon, delta = privacy.epsilon_per_round, privacy.delta_per_round
    per_unit_windows = privacy.max_windows_per_entity if privacy.unit == "entity" else 1
    max_observables = privacy.max_observables_per_entity
    bounded = bound_round(windows, privacy=privacy, rng=rng)
    kept, unit_counts, score_sums = bounded.kept, bounded.unit_counts, bounded.score_sums
    histogram_mechanism = DiscreteLaplaceMechanism(privacy.histogram_share * epsilon, per_unit_windows)
    histogram = tuple(max(0, n) for n in histogram_mechanism.release(list(bounded.histogram), rng))

    # Partition selection releases only observables whose noised count clears the threshold.
    count_epsilon = privacy.count_share * epsilon
    threshold = partition_threshold(epsilon=count_epsilon, delta=delta, max_partitions_per_unit=max_observables)
    released = select_partitions(
        unit_counts, epsilon=count_epsilon, delta=delta, max_partitions_per_unit=max_observables, rng=rng
    )

    # Mean scores: noised sum over noised count, clipped back to [0, 1].
    score_mechanism = DiscreteLaplaceMechanism(privacy.score_share * epsilon, max_observables * SCORE_QUANTUM)
    evidence = []
    for remote in sorted(released):
        noised_count = released[remote]
        (noised_sum,) = score_mechanism.release([score_sums[remote]], rng)
        mean = min(1.0, max(0.0, noised_sum / (SCORE_QUANTUM * max(noised_count, 1))))
        kind, value = split_observable_key(remote)
        evidence.append(EvidenceRelease(kind, value, noised_count, round(mean, 4)))

    log.debug("round %d: %d units, %d candidate observables, %d released",
              round_start, len(kept), len(unit_counts), len(evidence))
    return RoundRelease(
        round_start=round_start,
        round_end=round_start + round_seconds,
        histogram=histogram,
        noised_window_count=sum(histogram),
        evidence=tuple(evidence),
        epsilon=epsilon,
        delta=delta,
        partition_threshold=threshold,
        units=len(kept),
    )
