"""Tests of the trust-weighted noisy-OR on numbers computed by hand."""

from __future__ import annotations

import pytest

from fusion_hub.fusion import (
    FusedObservable,
    NoisyOrFusion,
    SiteEvidence,
    create_strategy,
    evidence_from_summary,
    should_publish,
)


def item(site_id: str, value: str, score: float, round_start_us: int = 0) -> SiteEvidence:
    return SiteEvidence(site_id=site_id, round_start_us=round_start_us,
                        observable_type="ipv4-addr", value=value, noised_mean_score=score,
                        noised_entity_count=4)


def test_noisy_or_two_sites_corroborating() -> None:
    """w = 2/3 for both (prior alpha 2, beta 1): 1 - (1 - 0.4)(1 - 0.6) = 0.76."""
    trust = {"site-a": 2 / 3, "site-b": 2 / 3}

    fused = NoisyOrFusion().fuse([item("site-a", "203.0.113.9", 0.6),
                                  item("site-b", "203.0.113.9", 0.9)], trust)

    assert len(fused) == 1
    assert fused[0].fused_score == pytest.approx(0.76)
    assert fused[0].corroborating_sites == 2
    assert fused[0].site_ids == ("site-a", "site-b")


def test_noisy_or_trust_weights_scale_each_site() -> None:
    """0.25 * 0.8 = 0.2 and 0.75 * 0.4 = 0.3, so 1 - 0.8 * 0.7 = 0.44."""
    trust = {"doubtful": 1 / (1 + 3), "reliable": 3 / (3 + 1)}

    fused = NoisyOrFusion().fuse([item("doubtful", "198.51.100.7", 0.8),
                                  item("reliable", "198.51.100.7", 0.4)], trust)

    assert fused[0].fused_score == pytest.approx(0.44)


def test_noisy_or_site_max_score_counts() -> None:
    """Three rounds of one site give 2/3 * 0.9 = 0.6, not a product over rounds."""
    evidence = [item("site-a", "203.0.113.9", score, round_start_us=r)
                for r, score in enumerate((0.3, 0.9, 0.5))]

    fused = NoisyOrFusion().fuse(evidence, {"site-a": 2 / 3})

    assert fused[0].fused_score == pytest.approx(0.6)
    assert fused[0].corroborating_sites == 1


def test_noisy_or_ignores_sites_without_trust(caplog: pytest.LogCaptureFixture) -> None:
    fused = NoisyOrFusion().fuse([item("site-a", "203.0.113.9", 0.5),
                                  item("gone", "203.0.113.9", 1.0),
                                  item("gone", "203.0.113.10", 1.0)], {"site-a": 0.5})

    assert [(f.value, f.fused_score, f.corroborating_sites) for f in fused] == [
        ("203.0.113.9", pytest.approx(0.25), 1)]
    assert "fusion ignored evidence of 1 sites without a trust weight: gone" in caplog.text


def test_noisy_or_output_sorted_and_order_independent() -> None:
    evidence = [item("site-b", "203.0.113.2", 0.7), item("site-a", "203.0.113.1", 0.2),
                item("site-a", "203.0.113.2", 0.4)]
    trust = {"site-a": 0.9, "site-b": 0.6}

    forward = NoisyOrFusion().fuse(evidence, trust)
    backward = NoisyOrFusion().fuse(list(reversed(evidence)), trust)

    assert forward == backward
    assert [f.value for f in forward] == ["203.0.113.1", "203.0.113.2"]
    assert forward[1].fused_score == pytest.approx(1 - (1 - 0.36) * (1 - 0.42))


@pytest.mark.parametrize(("score", "sites", "expected"), [
    (0.5, 1, True),     # reaches the score threshold
    (0.49, 1, False),   # neither threshold
    (0.1, 2, True),     # corroborated by two sites
])
def test_should_publish_thresholds(score: float, sites: int, expected: bool) -> None:
    fused = FusedObservable("ipv4-addr", "203.0.113.9", score, sites, ("a", "b")[:sites])

    assert should_publish(fused, publish_threshold=0.5, min_corroborating_sites=2) is expected


def test_evidence_from_summary_reads_released_observables() -> None:
    summary = {"site": "site-a", "evidence": [
        {"observable_type": "domain-name", "value": "bad.example", "noised_entity_count": 7,
         "noised_mean_score": 0.8, "first_seen": "x", "last_seen": "y"}]}

    evidence = evidence_from_summary(summary, round_start_us=42)

    assert evidence == [SiteEvidence("site-a", 42, "domain-name", "bad.example", 0.8, 7)]


def test_evidence_from_summary_families_count_one_site() -> None:
    """A site whose network and process detectors both release a domain is one witness."""
    items = [{"family": family, "observable_type": "domain-name", "value": "bad.example",
              "noised_entity_count": 7, "noised_mean_score": score, "first_seen": "x", "last_seen": "y"}
             for family, score in (("network", 0.4), ("process", 0.9))]

    evidence = evidence_from_summary({"site": "site-a", "evidence": items}, round_start_us=42)
    fused = NoisyOrFusion().fuse(evidence, {"site-a": 1.0})

    assert [e.family for e in evidence] == ["network", "process"]
    assert [(f.value, f.corroborating_sites, f.fused_score) for f in fused] == [("bad.example", 1, 0.9)]


def test_create_strategy_unknown_name_raises() -> None:
    assert create_strategy("noisy-or").name == "trust-weighted-noisy-or"
    with pytest.raises(ValueError, match="unknown fusion strategy 'no-such-strategy'"):
        create_strategy("no-such-strategy")
