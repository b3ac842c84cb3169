"""Release one round of every configured family as the sections and evidence of one summary.

Each family is summarised by :func:`agent.summariser.summarise_round` with an equal share of
the round's epsilon and delta, so by basic composition the round as a whole costs the
configured ``epsilon_per_round`` and ``delta_per_round``. The shares do not depend on which
families saw data, and a family without windows in the round still releases its noised
histogram, so neither the split nor the list of sections reveals anything about the data.
Equal shares give every family the same partition threshold, the one the summary states.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

from agent.config import PrivacySection
from agent.detector import ScoredWindow
from agent.summariser import BIN_EDGES, RoundRelease, summarise_round
from privacy.random import RandomSource

__all__ = ["FamiliesRelease", "family_sections", "evidence_items", "summarise_families"]


@dataclass(frozen=True)
class FamiliesRelease:
    """One round's release of every configured family, before it is wrapped as STIX."""

    round_start: int
    round_end: int
    families: dict[str, RoundRelease]  # in the order of agent.families.FAMILIES
    epsilon: float
    delta: float
    partition_threshold: int

    @property
    def evidence_count(self) -> int:
        return sum(len(release.evidence) for release in self.families.values())


def summarise_families(scored: dict[str, list[ScoredWindow]], families: tuple[str, ...], *, round_start: int,
                       round_seconds: int, privacy: PrivacySection, rng: RandomSource) -> FamiliesRelease:
    """Release the round's windows of each family in ``families`` with its share of the budget.

    Raises
    ------
    ValueError
        If ``families`` is empty.
    """
    if not families:
        raise ValueError("families must name at least one configured family")
    share = replace(privacy, epsilon_per_round=privacy.epsilon_per_round / len(families),
                    delta_per_round=privacy.delta_per_round / len(families))
    releases = {
        family: summarise_round(scored.get(family, []), round_start=round_start, round_seconds=round_seconds,
                                privacy=share, rng=rng)
        for family in families
    }
    first = next(iter(releases.values()))
    return FamiliesRelease(round_start=round_start, round_end=round_start + round_seconds, families=releases,
                           epsilon=privacy.epsilon_per_round, delta=privacy.delta_per_round,
                           partition_threshold=first.partition_threshold)


def family_sections(release: FamiliesRelease, detectors: dict[str, tuple[str, str]],
                    schema_versions: dict[str, str]) -> list[dict]:
    """Return the summary's ``families`` list. ``detectors`` maps family to (name, version)."""
    return [
        {
            "family": family,
            "detector": {"name": detectors[family][0], "version": detectors[family][1]},
            "feature_schema_version": schema_versions[family],
            "score_histogram": {"bin_edges": list(BIN_EDGES), "noised_counts": list(part.histogram)},
            "noised_window_count": part.noised_window_count,
        }
        for family, part in release.families.items()
    ]


def evidence_items(release: FamiliesRelease) -> list[dict]:
    """Return the summary's ``evidence`` list, first and last seen coarsened to the round."""
    first_seen = datetime.fromtimestamp(release.round_start, tz=timezone.utc)
    last_seen = datetime.fromtimestamp(release.round_end, tz=timezone.utc)
    return [
        {"family": family, "observable_type": e.observable_type, "value": e.value,
         "noised_entity_count": e.noised_unit_count, "noised_mean_score": e.noised_mean_score,
         "first_seen": first_seen, "last_seen": last_seen}
        for family, part in release.families.items()
        for e in part.evidence
    ]
