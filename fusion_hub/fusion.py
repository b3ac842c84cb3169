"""Fusion of the sites' released evidence into one score per observable.

All strategies share one interface (``FusionStrategy``): they take per-site evidence and each
site's trust weight, and return one ``FusedObservable`` per observable. The hub's default is a
trust-weighted noisy-OR with corroboration:

    p(o) = 1 - prod_s (1 - w_s * m_{s,o})

over the sites s that released observable o in the rounds considered, where m_{s,o} is the
site's noised mean calibrated score for o (its maximum when it released o in several rounds)
and w_s is the site's trust weight, the posterior mean alpha / (alpha + beta) of a
Beta-distributed precision. Each site acts as an independent, imperfect detector that fires
with probability w_s * m_{s,o}; p(o) is the probability that at least one of them is right.
``corroborating_sites`` counts the distinct sites that released o.

Notes
-----
The independence assumption of noisy-OR overstates p(o) when sites see the same upstream
traffic (two branches behind one proxy). Trust weights bound each site's pull, so one
malicious site with weight w can raise p(o) to at most w. A coalition of colluding sites can
still push an observable over the threshold. Robust aggregation (median, trimmed mean) would
resist that better.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteEvidence:
    """One observable released by one site in one round."""

    site_id: str
    round_start_us: int
    observable_type: str
    value: str
    noised_mean_score: float
    noised_entity_count: int


@dataclass(frozen=True)
class FusedObservable:
    """Fusion result for one observable."""

    observable_type: str
    value: str
    fused_score: float
    corroborating_sites: int
    site_ids: tuple[str, ...]


class FusionStrategy(Protocol):
    """Interface every fusion strategy implements."""

    # Recorded in the fusion extension of each published indicator.
    name: str

    def fuse(
        self, evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
    ) -> list[FusedObservable]:
        """Return one fused result per observable, ordered by (observable_type, value)."""
        ...


class NoisyOrFusion:
    """Trust-weighted noisy-OR; see the module docstring for the formula.

    Evidence from sites missing from ``trust`` (unknown or revoked) is ignored.
    """

    name = "trust-weighted-noisy-or"

    def fuse(
        self, evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
    ) -> list[FusedObservable]:
        # A site counts once per observable, with its strongest score in the window of
        # rounds, so resending the same observable every round does not inflate p(o).
        strongest: dict[tuple[str, str], dict[str, float]] = {}
        ignored_sites: set[str] = set()
        for item in evidence:
            if item.site_id not in trust:
                ignored_sites.add(item.site_id)
                continue
            key = (item.observable_type, item.value)
            per_site = strongest.setdefault(key, {})
            score = min(max(float(item.noised_mean_score), 0.0), 1.0)
            per_site[item.site_id] = max(per_site.get(item.site_id, 0.0), score)
        if ignored_sites:
            log.warning("fusion ignored evidence of %d sites without a trust weight: %s",
                        len(ignored_sites), ", ".join(sorted(ignored_sites)))

        results = []
        for (observable_type, value), per_site in sorted(strongest.items()):
            # Sorted sites make the floating-point product independent of arrival order.
            miss = 1.0
            for site_id in sorted(per_site):
                weight = min(max(trust[site_id], 0.0), 1.0)
                miss *= 1.0 - weight * per_site[site_id]
            results.append(FusedObservable(
                observable_type=observable_type, value=value, fused_score=1.0 - miss,
                corroborating_sites=len(per_site), site_ids=tuple(sorted(per_site)),
            ))
        return results


def should_publish(
    fused: FusedObservable, *, publish_threshold: float, min_corroborating_sites: int
) -> bool:
    """Return whether a fused observable is published as an indicator.

    It is when its score reaches ``publish_threshold`` or when at least
    ``min_corroborating_sites`` distinct sites released it.
    """
    return (fused.fused_score >= publish_threshold
            or fused.corroborating_sites >= min_corroborating_sites)


def create_strategy(name: str) -> FusionStrategy:
    """Return the strategy configured as ``fusion.strategy``.

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    if name == "noisy-or":
        return NoisyOrFusion()
    raise ValueError(f"unknown fusion strategy {name!r}; use 'noisy-or'")


def evidence_from_summary(summary: Mapping[str, Any], *, round_start_us: int) -> list[SiteEvidence]:
    """Extract the released observables of a stored round summary.

    The summary passed the intake checks (schema and signature) before it was stored, so its
    fields are present and typed.
    """
    site_id = str(summary["site"])
    return [
        SiteEvidence(
            site_id=site_id, round_start_us=round_start_us,
            observable_type=str(item["observable_type"]), value=str(item["value"]),
            noised_mean_score=float(item["noised_mean_score"]),
            noised_entity_count=int(item["noised_entity_count"]),
        )
        for item in summary.get("evidence", [])
    ]
