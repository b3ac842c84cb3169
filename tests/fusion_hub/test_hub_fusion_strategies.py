"""Robust, corroboration and ensemble fusion strategies, run through one contract suite."""

from __future__ import annotations

import numpy as np
import pytest

from fusion_hub.config import STRATEGIES
from fusion_hub.fusion import (
    CorroborationFusion,
    EnsembleFusion,
    FusionStrategy,
    MedianFusion,
    NoisyOrFusion,
    SiteEvidence,
    TrimmedMeanFusion,
    create_strategy,
)
from privacy.errors import InvalidPrivacyParameter
from privacy.mechanisms import discrete_laplace_variance
from privacy.random import seeded_random

TRUST = {"site-a": 1.0, "site-b": 1.0, "site-c": 1.0, "site-d": 1.0, "site-e": 0.5}


def item(site: str, value: str, score: float, count: int = 5) -> SiteEvidence:
    return SiteEvidence(site, 0, "ipv4-addr", value, score, count)


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_configured_strategy_meets_contract(name: str) -> None:
    """Sorted output, one result per observable, scores in [0, 1], untrusted sites ignored."""
    strategy: FusionStrategy = create_strategy(name)
    evidence = [item("site-b", "198.51.100.2", 0.9), item("site-a", "198.51.100.1", 0.4),
                item("site-a", "198.51.100.2", 0.7), item("unknown", "198.51.100.3", 1.0)]

    fused = strategy.fuse(evidence, TRUST)

    assert [f.value for f in fused] == ["198.51.100.1", "198.51.100.2"]
    assert all(0.0 <= f.fused_score <= 1.0 for f in fused)
    assert fused[1].site_ids == ("site-a", "site-b")
    # The corroboration strategy publishes a noised site count.
    if name != "corroboration":
        assert fused[1].corroborating_sites == 2


def test_capped_noisy_or_bounds_single_site() -> None:
    fused = NoisyOrFusion(site_cap=0.45).fuse([item("site-a", "198.51.100.1", 1.0),
                                               item("site-a", "198.51.100.2", 1.0),
                                               item("site-b", "198.51.100.2", 1.0)], TRUST)

    assert fused[0].fused_score == pytest.approx(0.45)
    assert fused[1].fused_score == pytest.approx(1 - 0.55 ** 2)


def test_median_resists_one_outlier_site() -> None:
    evidence = [item("site-a", "198.51.100.1", 0.2), item("site-b", "198.51.100.1", 0.3),
                item("site-c", "198.51.100.1", 1.0)]

    fused = MedianFusion().fuse(evidence, TRUST)

    assert fused[0].fused_score == pytest.approx(0.3)


def test_median_applies_trust_weight() -> None:
    fused = MedianFusion().fuse([item("site-e", "198.51.100.1", 0.8)], TRUST)

    assert fused[0].fused_score == pytest.approx(0.4)


def test_trimmed_mean_drops_both_extremes() -> None:
    evidence = [item(s, "198.51.100.1", v) for s, v in
                [("site-a", 0.0), ("site-b", 0.4), ("site-c", 0.6), ("site-d", 1.0)]]

    fused = TrimmedMeanFusion(trim_fraction=0.25).fuse(evidence, TRUST)

    assert fused[0].fused_score == pytest.approx(0.5)


def test_trimmed_mean_rejects_half_trim() -> None:
    with pytest.raises(ValueError, match=r"trim_fraction must be in \[0, 0.5\); got 0.5"):
        TrimmedMeanFusion(trim_fraction=0.5)


def test_corroboration_counts_trusted_sites() -> None:
    """At epsilon 100 the noise is 0.02 trust units at most times: the score is the support."""
    evidence = [item("site-a", "198.51.100.1", 0.1), item("site-e", "198.51.100.1", 0.1),
                item("site-a", "198.51.100.2", 0.9), item("site-a", "198.51.100.2", 0.9)]

    fused = CorroborationFusion(saturation_sites=2, epsilon=100.0,
                                rng=seeded_random(1)).fuse(evidence, TRUST)

    assert fused[0].fused_score == pytest.approx(0.75, abs=0.05)
    assert fused[1].fused_score == pytest.approx(0.5, abs=0.05)
    assert fused[0].corroborating_sites == 2
    assert fused[1].corroborating_sites == 1


def test_corroboration_noises_site_count() -> None:
    """The count gets discrete Laplace noise of scale 2 / epsilon (sensitivity 1, half of epsilon)."""
    strategy = CorroborationFusion(saturation_sites=100, epsilon=2.0, rng=seeded_random(7))
    sites = ["site-a", "site-b", "site-c", "site-d", "site-e"]
    evidence = [item(site, "198.51.100.1", 0.9) for site in sites]

    counts = np.array([strategy.fuse(evidence, TRUST)[0].corroborating_sites for _ in range(2000)])

    # Noise of scale 1 falls below -4 with probability about 0.007, so raising to 1 is rare.
    assert counts.mean() == pytest.approx(5.0, abs=0.15)
    assert counts.var() == pytest.approx(discrete_laplace_variance(1), rel=0.2)


def test_corroboration_noise_repeats_for_seed() -> None:
    evidence = [item("site-a", "198.51.100.1", 0.9), item("site-b", "198.51.100.2", 0.4)]

    first = CorroborationFusion(rng=seeded_random(5)).fuse(evidence, TRUST)
    second = CorroborationFusion(rng=seeded_random(5)).fuse(evidence, TRUST)

    assert first == second


def test_corroboration_rejects_zero_epsilon() -> None:
    with pytest.raises(InvalidPrivacyParameter, match="epsilon"):
        CorroborationFusion(epsilon=0.0)


def test_ensemble_before_fit_equals_noisy_or() -> None:
    evidence = [item("site-a", "198.51.100.1", 0.6), item("site-b", "198.51.100.1", 0.5)]

    ensemble = EnsembleFusion().fuse(evidence, TRUST)
    noisy_or = NoisyOrFusion().fuse(evidence, TRUST)

    assert [f.fused_score for f in ensemble] == [f.fused_score for f in noisy_or]


def test_ensemble_learns_that_corroboration_matters() -> None:
    """Labels say: released by two sites means malicious, by one means benign, whatever the score."""
    examples = []
    for i in range(20):
        value = f"198.51.100.{i}"
        if i % 2:
            examples.append(([item("site-a", value, 0.3), item("site-b", value, 0.3)], True))
        else:
            examples.append(([item("site-a", value, 0.9)], False))
    ensemble = EnsembleFusion(regularization=10.0).fit(examples, TRUST)

    fused = ensemble.fuse([item("site-c", "203.0.113.1", 0.3), item("site-d", "203.0.113.1", 0.3),
                           item("site-c", "203.0.113.2", 0.9)], TRUST)

    assert fused[0].fused_score > 0.8
    assert fused[1].fused_score < 0.2


def test_ensemble_fit_one_class_keeps_noisy_or() -> None:
    ensemble = EnsembleFusion().fit([([item("site-a", "198.51.100.1", 0.9)], True)], TRUST)

    assert not hasattr(ensemble, "model_")
