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

The other strategies, selectable as ``fusion.strategy`` (see ``create_strategy``):

- ``capped-noisy-or``: noisy-OR with each site's term capped (per-site cap);
- ``median`` and ``trimmed-mean``: robust aggregation of the releasing sites' weighted scores;
- ``corroboration``: the trust-weighted number of distinct sites that released o, with DP
  noise on that number and on the published site count;
- ``ensemble``: a logistic-regression meta-model over the released numbers, trained on
  observables whose verdict came back as feedback.

Notes
-----
The independence assumption of noisy-OR overstates p(o) when sites see the same upstream
traffic (two branches behind one proxy). Trust weights bound each site's pull, so one
malicious site with weight w can raise p(o) to at most w. A coalition of colluding sites can
still push an observable over the threshold. The median and the trimmed mean resist such a
coalition while it is a minority of the sites that released o.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from privacy.mechanisms import DiscreteLaplaceMechanism, validate_epsilon
from privacy.random import RandomSource, system_random

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteEvidence:
    """One observable released by one site in one round, by one detector family."""

    site_id: str
    round_start_us: int
    observable_type: str
    value: str
    noised_mean_score: float
    noised_entity_count: int
    family: str = "network"


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


def strongest_per_site(
    evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
) -> dict[tuple[str, str], dict[str, float]]:
    """Group evidence by observable and keep each site's strongest score in [0, 1].

    A site counts once per observable, with its strongest score in the window of rounds and
    over its detector families. Resending the same observable every round therefore does not
    inflate the fused score. Nor does a site whose network and process detectors both flag
    it, because both read the same site's telemetry and so are one witness, not two. Evidence from
    sites missing from ``trust`` (unknown or revoked) is dropped with one warning.
    """
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
    return strongest


def _weight(trust: Mapping[str, float], site_id: str) -> float:
    return min(max(float(trust[site_id]), 0.0), 1.0)


def _capped_weighted_scores(
    per_site: Mapping[str, float], trust: Mapping[str, float], cap: float
) -> list[float]:
    return sorted(min(_weight(trust, site_id) * score, cap) for site_id, score in per_site.items())


def _result(key: tuple[str, str], per_site: Mapping[str, float], score: float) -> FusedObservable:
    return FusedObservable(
        observable_type=key[0], value=key[1], fused_score=min(max(score, 0.0), 1.0),
        corroborating_sites=len(per_site), site_ids=tuple(sorted(per_site)),
    )


def _check_unit_interval(name: str, value: float, *, open_low: bool = False) -> float:
    value = float(value)
    low_ok = value > 0.0 if open_low else value >= 0.0
    if not (low_ok and value <= 1.0):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}; got {value}")
    return value


class NoisyOrFusion:
    """Trust-weighted noisy-OR; see the module docstring for the formula.

    Parameters
    ----------
    site_cap : float, default 1.0
        Upper bound, in (0, 1], of each site's term ``w_s * m_{s,o}``. Below the publish
        threshold it means that no single site can publish an observable on its own.
    """

    def __init__(self, *, site_cap: float = 1.0) -> None:
        self.site_cap = _check_unit_interval("site_cap", site_cap, open_low=True)
        self.name = "trust-weighted-noisy-or" if self.site_cap == 1.0 else "capped-noisy-or"

    def fuse(
        self, evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
    ) -> list[FusedObservable]:
        results = []
        for key, per_site in sorted(strongest_per_site(evidence, trust).items()):
            # Sorted sites make the floating-point product independent of arrival order.
            miss = 1.0
            for site_id in sorted(per_site):
                miss *= 1.0 - min(_weight(trust, site_id) * per_site[site_id], self.site_cap)
            results.append(_result(key, per_site, 1.0 - miss))
        return results


class MedianFusion:
    """Median of the trust-weighted scores of the sites that released an observable.

    Parameters
    ----------
    site_cap : float, default 1.0
        Upper bound, in (0, 1], of each site's weighted score before the median.

    Notes
    -----
    The median resists a minority of the sites that released an observable: one site cannot
    move it past the scores of the others. An observable released by a single site gets that
    site's (capped) score, so a lone poisoning site is bounded only by its trust weight and
    the cap.
    """

    name = "median"

    def __init__(self, *, site_cap: float = 1.0) -> None:
        self.site_cap = _check_unit_interval("site_cap", site_cap, open_low=True)

    def fuse(
        self, evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
    ) -> list[FusedObservable]:
        results = []
        for key, per_site in sorted(strongest_per_site(evidence, trust).items()):
            weighted = _capped_weighted_scores(per_site, trust, self.site_cap)
            results.append(_result(key, per_site, float(np.median(weighted))))
        return results


class TrimmedMeanFusion:
    """Mean of the trust-weighted scores after dropping the extremes on both sides.

    Parameters
    ----------
    trim_fraction : float, default 0.2
        Fraction, in [0, 0.5), of the releasing sites dropped from each end. With three or
        more sites at least one is dropped from each end whenever the fraction is above 0.
    site_cap : float, default 1.0
        Upper bound, in (0, 1], of each site's weighted score before trimming.
    """

    name = "trimmed-mean"

    def __init__(self, *, trim_fraction: float = 0.2, site_cap: float = 1.0) -> None:
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5); got {trim_fraction}")
        self.trim_fraction = float(trim_fraction)
        self.site_cap = _check_unit_interval("site_cap", site_cap, open_low=True)

    def fuse(
        self, evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
    ) -> list[FusedObservable]:
        results = []
        for key, per_site in sorted(strongest_per_site(evidence, trust).items()):
            weighted = _capped_weighted_scores(per_site, trust, self.site_cap)
            cut = math.floor(self.trim_fraction * len(weighted))
            if self.trim_fraction > 0 and cut == 0 and len(weighted) >= 3:
                cut = 1
            kept = weighted[cut:len(weighted) - cut]
            results.append(_result(key, per_site, float(np.mean(kept))))
        return results


# Trust weights enter the corroboration noise as integers in [0, _TRUST_UNITS].
_TRUST_UNITS = 100


class CorroborationFusion:
    """Score an observable by the noised number of trusted sites that released it.

    The sites' scores are not used, only the fact that each site's partition selection
    released the observable. Two numbers of each observable get discrete Laplace noise
    (``privacy.mechanisms``), half of ``epsilon`` each:

    - the count of distinct releasing sites (L1 sensitivity 1), published as
      ``corroborating_sites`` and raised to at least 1, since at least one site released it;
    - the sum of their trust weights in units of 1/100 (each weight is at most 1, so the L1
      sensitivity is 100 units), divided by ``saturation_sites`` and clipped to [0, 1] as the
      fused score.

    Adding or removing one site's release of one observable changes the pair by at most the
    sensitivities, so the pair is ``epsilon``-DP towards the consumers of the indicators, per
    observable and round. A site that releases k observables in the lookback window is covered
    at ``k * epsilon`` by composition. The hub itself still reads every site's release.

    Parameters
    ----------
    saturation_sites : float, default 2.0
        Trust-weighted number of sites, > 0, at which the score reaches 1.
    epsilon : float, default 1.0
        Privacy parameter of the noise on each observable's two numbers.
    rng : RandomSource, optional
        Source of the noise; the operating system's CSPRNG by default, a seeded one in tests
        and evaluation runs.
    """

    name = "corroboration"

    def __init__(self, *, saturation_sites: float = 2.0, epsilon: float = 1.0,
                 rng: RandomSource | None = None) -> None:
        if not saturation_sites > 0:
            raise ValueError(f"saturation_sites must be > 0; got {saturation_sites}")
        self.saturation_sites = float(saturation_sites)
        self.epsilon = validate_epsilon(epsilon)
        self._count_noise = DiscreteLaplaceMechanism(self.epsilon / 2, l1_sensitivity=1)
        self._support_noise = DiscreteLaplaceMechanism(self.epsilon / 2, l1_sensitivity=_TRUST_UNITS)
        self._rng = rng if rng is not None else system_random()

    def fuse(
        self, evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
    ) -> list[FusedObservable]:
        results = []
        for key, per_site in sorted(strongest_per_site(evidence, trust).items()):
            [count] = self._count_noise.release([len(per_site)], self._rng)
            units = sum(round(_weight(trust, s) * _TRUST_UNITS) for s in sorted(per_site))
            [units] = self._support_noise.release([units], self._rng)
            support = units / _TRUST_UNITS
            results.append(FusedObservable(
                observable_type=key[0], value=key[1],
                fused_score=min(max(support / self.saturation_sites, 0.0), 1.0),
                corroborating_sites=max(count, 1), site_ids=tuple(sorted(per_site)),
            ))
        return results


# Features the ensemble's meta-model reads for one observable, all computed from released
# (DP-protected) numbers and the hub's own trust weights.
ENSEMBLE_FEATURES = ("noisy_or", "max_score", "mean_score", "sites", "trust_sum",
                     "log_entity_count")


class EnsembleFusion:
    """Federated ensemble: a logistic-regression meta-model over the sites' released outputs.

    For each observable the meta-model reads ``ENSEMBLE_FEATURES``: the trust-weighted noisy-OR,
    the strongest and mean released score, the number of releasing sites, the sum of their
    trust weights and log(1 + total noised entity count). :meth:`fit` trains it on observables
    whose verdict came back as feedback (confirmed or refuted). Until it has been fitted on
    both classes, it returns the noisy-OR score, so a new hub behaves like the default.

    Parameters
    ----------
    regularization : float, default 1.0
        Inverse regularization strength ``C`` of scikit-learn's ``LogisticRegression``, > 0.
    """

    name = "federated-ensemble"

    def __init__(self, *, regularization: float = 1.0) -> None:
        if not regularization > 0:
            raise ValueError(f"regularization must be > 0; got {regularization}")
        self.regularization = float(regularization)
        self._noisy_or = NoisyOrFusion()

    def fit(
        self,
        examples: Sequence[tuple[Sequence[SiteEvidence], bool]],
        trust: Mapping[str, float],
    ) -> "EnsembleFusion":
        """Train the meta-model on labelled observables.

        Parameters
        ----------
        examples : sequence of (evidence, confirmed)
            The evidence of one observable (all items name the same observable) and whether
            feedback confirmed it as malicious.
        trust : mapping of site id to weight
            Trust weights used for the features, as at fusion time.

        Returns
        -------
        EnsembleFusion
            ``self``; ``model_`` stays unset when the examples hold only one class.
        """
        from sklearn.linear_model import LogisticRegression

        rows, labels = [], []
        for items, confirmed in examples:
            features = self._features(items, trust)
            rows.extend(features.values())
            labels.extend([int(confirmed)] * len(features))
        if len(set(labels)) < 2:
            log.info("ensemble fusion: %d labelled observables of one class; keeping noisy-OR",
                     len(labels))
            return self
        model = LogisticRegression(C=self.regularization, max_iter=1000)
        model.fit(np.asarray(rows, dtype=float), np.asarray(labels))
        self.model_ = model
        log.info("ensemble fusion: meta-model fitted on %d labelled observables (%d confirmed)",
                 len(labels), sum(labels))
        return self

    def fuse(
        self, evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
    ) -> list[FusedObservable]:
        baseline = self._noisy_or.fuse(evidence, trust)
        model = getattr(self, "model_", None)
        if model is None or not baseline:
            return baseline
        features = self._features(evidence, trust)
        keys = [(item.observable_type, item.value) for item in baseline]
        probabilities = model.predict_proba(np.asarray([features[k] for k in keys], dtype=float))
        return [
            FusedObservable(observable_type=item.observable_type, value=item.value,
                            fused_score=float(p), corroborating_sites=item.corroborating_sites,
                            site_ids=item.site_ids)
            for item, p in zip(baseline, probabilities[:, 1])
        ]

    def _features(
        self, evidence: Sequence[SiteEvidence], trust: Mapping[str, float]
    ) -> dict[tuple[str, str], list[float]]:
        counts: dict[tuple[str, str], int] = {}
        for item in evidence:
            if item.site_id in trust:
                key = (item.observable_type, item.value)
                counts[key] = counts.get(key, 0) + max(int(item.noised_entity_count), 0)
        noisy_or = {(f.observable_type, f.value): f.fused_score
                    for f in self._noisy_or.fuse(evidence, trust)}
        features = {}
        for key, per_site in sorted(strongest_per_site(evidence, trust).items()):
            scores = [per_site[s] for s in sorted(per_site)]
            features[key] = [
                noisy_or[key], max(scores), float(np.mean(scores)), float(len(scores)),
                sum(_weight(trust, s) for s in per_site), math.log1p(counts.get(key, 0)),
            ]
        return features


def should_publish(
    fused: FusedObservable, *, publish_threshold: float, min_corroborating_sites: int
) -> bool:
    """Return whether a fused observable is published as an indicator.

    It is when its score reaches ``publish_threshold`` or when at least
    ``min_corroborating_sites`` distinct sites released it.
    """
    return (fused.fused_score >= publish_threshold
            or fused.corroborating_sites >= min_corroborating_sites)


def create_strategy(
    name: str, *, corroboration_epsilon: float = 1.0, rng: RandomSource | None = None
) -> FusionStrategy:
    """Return the strategy configured as ``fusion.strategy``, with its default parameters.

    ``corroboration_epsilon`` and ``rng`` set the noise of the ``corroboration`` strategy.

    ``capped-noisy-or`` caps each site's term at 0.45, below the default publish threshold of
    0.5, so that publication needs a second site or a score from the hub's trust in one.

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    factories: dict[str, Callable[[], FusionStrategy]] = {
        "noisy-or": NoisyOrFusion,
        "capped-noisy-or": lambda: NoisyOrFusion(site_cap=0.45),
        "median": MedianFusion,
        "trimmed-mean": TrimmedMeanFusion,
        "corroboration": lambda: CorroborationFusion(epsilon=corroboration_epsilon, rng=rng),
        "ensemble": EnsembleFusion,
    }
    factory = factories.get(name)
    if factory is None:
        raise ValueError(f"unknown fusion strategy {name!r}; use one of: {', '.join(factories)}")
    return factory()


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
            family=str(item.get("family", "network")),
        )
        for item in summary.get("evidence", [])
    ]
