"""Trust updates from STIX opinions on fused indicators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from fusion_hub.feedback import Outcomes, apply_feedback, tally_opinions, verdict_of
from fusion_hub.server import HubServer
from stix_mappings.ids import collection_id, indicator_id, site_identity_id
from tests.fusion_hub.hub_testing import (
    TAXII,
    Site,
    enroll,
    evidence,
    make_config,
    running_hub,
    signed_summary,
)

BAD_IP = "203.0.113.9"


def opinion(value: str, *refs: str) -> dict:
    return {"type": "opinion", "spec_version": "2.1", "id": "opinion--" + "0" * 36,
            "opinion": value, "object_refs": list(refs)}


def post(hub: HubServer, site: Site, collection: str, objects: list[dict]) -> dict:
    response = requests.post(
        f"{hub.api_root_url}collections/{collection_id(collection)}/objects/",
        data=json.dumps({"objects": objects}), auth=site.auth, timeout=10,
        headers={"Accept": TAXII, "Content-Type": TAXII})
    return response.json()


def posted_opinion(site_id: str, value: str, ref: str, number: int) -> dict:
    return {"type": "opinion", "spec_version": "2.1",
            "id": f"opinion--{number:08d}-0000-4000-8000-000000000000",
            "created": "2024-06-03T01:00:00.000Z", "modified": "2024-06-03T01:00:00.000Z",
            "created_by_ref": site_identity_id(site_id), "opinion": value, "object_refs": [ref]}


def test_verdict_of_maps_opinion_enum() -> None:
    assert [verdict_of(opinion(v, "indicator--1")) for v in ("strongly-disagree", "disagree", "neutral", "agree",
                                             "strongly-agree")] == [-1, -1, 0, 1, 1]


def test_verdict_of_rejects_unknown_value() -> None:
    with pytest.raises(ValueError, match="'opinion' must be one of .*; got 'maybe'"):
        verdict_of(opinion("maybe", "indicator--1"))


def test_verdict_of_rejects_missing_refs() -> None:
    with pytest.raises(ValueError, match="'object_refs' must be a non-empty list .*; got \\[\\]"):
        verdict_of(opinion("agree"))


def test_verdict_of_rejects_other_type() -> None:
    with pytest.raises(ValueError, match="feedback takes opinion objects; got type 'note'"):
        verdict_of({"type": "note"})


def test_tally_opinions_counts_per_contributor() -> None:
    contributors = {"indicator--1": ("site-a", "site-b"), "indicator--2": ("site-b",)}
    opinions = [opinion("agree", "indicator--1"), opinion("disagree", "indicator--2"),
                opinion("neutral", "indicator--1"), opinion("agree", "indicator--3")]

    outcomes = tally_opinions(opinions, contributors)

    assert outcomes == {"site-a": Outcomes(1, 0), "site-b": Outcomes(1, 1)}


def test_apply_feedback_updates_contributors_only(tmp_path: Path) -> None:
    """Prior Beta(2, 1); site-a and site-b released BAD_IP, site-c did not."""
    config = make_config(tmp_path, rounds={"quorum_sites": 3})
    with running_hub(config) as hub:
        sites = [enroll(hub, name) for name in ("site-a", "site-b", "site-c")]
        items = [[evidence(BAD_IP, 0.9)], [evidence(BAD_IP, 0.8)], [evidence("198.51.100.7", 0.1)]]
        for site, site_items in zip(sites, items):
            assert post(hub, site, "summaries", [signed_summary(
                site, items=site_items)])["success_count"] == 1
        published = indicator_id(f"[ipv4-addr:value = '{BAD_IP}']")

        weights = apply_feedback(hub.registry, hub.storage,
                                 [opinion("disagree", published), opinion("disagree", published)],
                                 round_seconds=config.rounds.round_seconds,
                                 lookback_rounds=config.fusion.lookback_rounds)

        assert weights == {"site-a": pytest.approx(0.4), "site-b": pytest.approx(0.4)}
        assert hub.registry.trust_weight("site-c") == pytest.approx(2 / 3)


def test_feedback_intake_updates_trust_once(tmp_path: Path) -> None:
    """A posted disagree refutes both contributors; resending it changes nothing."""
    config = make_config(tmp_path, rounds={"quorum_sites": 2})
    with running_hub(config) as hub:
        site_a, site_b = enroll(hub, "site-a"), enroll(hub, "site-b")
        for site, score in ((site_a, 0.9), (site_b, 0.8)):
            assert post(hub, site, "summaries", [signed_summary(
                site, items=[evidence(BAD_IP, score)])])["success_count"] == 1
        published = indicator_id(f"[ipv4-addr:value = '{BAD_IP}']")
        opinion_object = posted_opinion("site-b", "disagree", published, 1)

        first = post(hub, site_b, "feedback", [opinion_object])
        second = post(hub, site_b, "feedback", [opinion_object])

        assert first["success_count"] == 1
        assert second["success_count"] == 1
        assert hub.registry.trust_weight("site-a") == pytest.approx(0.5)
        assert hub.registry.trust_weight("site-b") == pytest.approx(0.5)


def test_feedback_intake_rejects_unknown_opinion_value(tmp_path: Path) -> None:
    with running_hub(make_config(tmp_path)) as hub:
        site = enroll(hub, "site-a")

        status = post(hub, site, "feedback", [posted_opinion("site-a", "maybe", "indicator--x", 2)])

        assert status["failure_count"] == 1
        assert "'opinion' must be one of" in status["failures"][0]["message"]
        assert hub.registry.trust_weight("site-a") == pytest.approx(2 / 3)


def test_feedback_intake_rejects_non_identifier_refs(tmp_path: Path) -> None:
    """Refs are looked up in storage, and PostgreSQL cannot hold the NUL of the first."""
    valid_ref = "indicator--8eb15c94-6f70-4d8e-8f90-ab1c2d3e4f50"
    opinions = [posted_opinion("site-a", "agree", "indicator--\x00", 3),
                posted_opinion("site-a", "agree", "203.0.113.9", 4),
                posted_opinion("site-a", "agree", valid_ref, 5)]
    with running_hub(make_config(tmp_path)) as hub:
        site = enroll(hub, "site-a")

        status = post(hub, site, "feedback", opinions)

    assert (status["success_count"], status["failure_count"]) == (1, 2)
    assert status["successes"][0]["id"] == opinions[2]["id"]
    messages = {failure["id"]: failure["message"] for failure in status["failures"]}
    assert messages[opinions[0]["id"]] == ("object_refs must hold STIX identifiers "
                                           "(<type>--<UUID>); got 'indicator--\\x00'")
    assert messages[opinions[1]["id"]].endswith("got '203.0.113.9'")


def test_feedback_intake_fits_ensemble_strategy(tmp_path: Path) -> None:
    """One confirmed and one refuted indicator give the meta-model both classes."""
    config = make_config(tmp_path, rounds={"quorum_sites": 2}, fusion={"strategy": "ensemble"})
    with running_hub(config) as hub:
        site_a, site_b = enroll(hub, "site-a"), enroll(hub, "site-b")
        post(hub, site_a, "summaries", [signed_summary(
            site_a, items=[evidence(BAD_IP, 0.6), evidence("198.51.100.7", 0.9)])])
        post(hub, site_b, "summaries", [signed_summary(site_b, items=[evidence(BAD_IP, 0.6)])])
        bad = indicator_id(f"[ipv4-addr:value = '{BAD_IP}']")
        benign = indicator_id("[ipv4-addr:value = '198.51.100.7']")
        ensemble = hub.rounds.strategy
        assert not hasattr(ensemble, "model_")

        status = post(hub, site_b, "feedback", [posted_opinion("site-b", "agree", bad, 3),
                                                posted_opinion("site-b", "disagree", benign, 4)])

        assert status["success_count"] == 2
        assert hasattr(ensemble, "model_")
