"""The plain variant: the hub's intake, round closing, publication and feedback in-process."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.config import PrivacySection
from agent.service import build_round_summary
from agent.summariser import BIN_EDGES, EvidenceRelease, RoundRelease
from evaluation.plain import EvaluationHubError, PlainFederation, build_opinion
from fusion_hub.config import FusionSettings
from privacy.signing import generate_signing_key, sign_object

PRIVACY = PrivacySection(unit="entity-window", epsilon_per_round=1.0, delta_per_round=1e-5,
                         max_observables_per_entity=1, max_windows_per_entity=1)
ROUND_SECONDS = 3600
EPOCH = datetime(2024, 6, 3, tzinfo=timezone.utc)
SITES = ("site-a", "site-b", "site-c")
# Two rounds of indicator lifetime, one round of lookback: an observable released once is
# valid when its own round and the next one close, and revoked at the close after that.
FUSION = FusionSettings(lookback_rounds=1, publish_threshold=0.5, min_corroborating_sites=3,
                        indicator_ttl_seconds=2 * ROUND_SECONDS)


def _summary(site_id: str, key: object, round_index: int, evidence: dict[str, float]) -> dict:
    start = EPOCH + timedelta(seconds=round_index * ROUND_SECONDS)
    release = RoundRelease(
        round_start=int(start.timestamp()), round_end=int(start.timestamp()) + ROUND_SECONDS,
        histogram=(0,) * (len(BIN_EDGES) - 1), noised_window_count=len(evidence),
        evidence=tuple(EvidenceRelease("ipv4-addr", value, 30, score)
                       for value, score in sorted(evidence.items())),
        epsilon=1.0, delta=1e-5, partition_threshold=24, units=len(evidence),
    )
    return sign_object(build_round_summary(
        release, site_id=site_id, detector_name="iforest", detector_version="1",
        privacy=PRIVACY, epsilon_spent=1.0, created=start + timedelta(seconds=ROUND_SECONDS)), key)


@pytest.fixture()
def federation():
    keys = {site: generate_signing_key() for site in SITES}
    with PlainFederation(SITES, fusion=FUSION, round_seconds=ROUND_SECONDS, seed=0) as running:
        for site, key in keys.items():
            running.enroll(site, key.public_key_b64)
        running.keys = keys  # type: ignore[attr-defined]
        yield running


def _post_round(federation: PlainFederation, round_index: int,
                releases: dict[str, dict[str, float]]):
    start = EPOCH + timedelta(seconds=round_index * ROUND_SECONDS)
    federation.now = start + timedelta(seconds=ROUND_SECONDS)
    for site, evidence in releases.items():
        federation.post(site, "summaries",
                        [_summary(site, federation.keys[site], round_index, evidence)])
    return federation.close_round(start)


def test_plain_hub_publishes_and_revokes(federation: PlainFederation) -> None:
    first = _post_round(federation, 0, {"site-a": {"203.0.113.7": 0.9, "198.51.100.4": 0.2},
                                        "site-b": {"198.51.100.4": 0.1}})
    second = _post_round(federation, 1, {"site-a": {}, "site-b": {}})
    third = _post_round(federation, 2, {"site-a": {}, "site-b": {}})

    # 0.9 times the prior trust 2/3 is 0.6, above the threshold of 0.5.
    assert [(i.value, round(i.fused_score, 4)) for i in first.published] == [("203.0.113.7", 0.6)]
    assert first.valid == {"203.0.113.7": pytest.approx(0.6)}
    assert second.published == []
    assert second.valid == {"203.0.113.7": pytest.approx(0.6)}
    assert third.valid == {}


def test_plain_hub_opinions_move_trust(federation: PlainFederation) -> None:
    closed = _post_round(federation, 0, {"site-a": {"203.0.113.7": 0.9},
                                         "site-b": {"203.0.113.7": 0.8}})
    [indicator] = closed.published

    federation.post("site-c", "feedback", [build_opinion("site-c", indicator.id, agree=False,
                                                         created=federation.now)])
    trust = federation.trust_weights()

    # The prior Beta(2, 1) of both contributors gains one refutation.
    assert trust["site-a"] == pytest.approx(0.5)
    assert trust["site-b"] == pytest.approx(0.5)
    assert trust["site-c"] == pytest.approx(2 / 3)


def test_plain_hub_rejects_forged_signature(federation: PlainFederation) -> None:
    summary = _summary("site-a", federation.keys["site-b"], 0, {"203.0.113.7": 0.9})
    federation.now = EPOCH + timedelta(seconds=ROUND_SECONDS)

    with pytest.raises(EvaluationHubError, match="rejected .* from site site-a in summaries"):
        federation.post("site-a", "summaries", [summary])


def test_plain_hub_without_trust_weighting() -> None:
    """With trust weighting off, a site's whole score counts despite its lost trust."""
    keys = {site: generate_signing_key() for site in SITES}
    fusion = FusionSettings(lookback_rounds=1, publish_threshold=0.5, min_corroborating_sites=3,
                            indicator_ttl_seconds=ROUND_SECONDS, trust_weighting=False)
    with PlainFederation(SITES, fusion=fusion, round_seconds=ROUND_SECONDS, seed=0) as running:
        for site, key in keys.items():
            running.enroll(site, key.public_key_b64)
        running.keys = keys  # type: ignore[attr-defined]
        closed = _post_round(running, 0, {"site-a": {"203.0.113.7": 0.55}})

    assert [(i.value, i.fused_score) for i in closed.published] == [("203.0.113.7", 0.55)]
