"""Summary intake over real HTTP with taxii2-client: signatures, replays, sites, rounds."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from taxii2client.v21 import Collection, Server

from fusion_hub.server import HubServer
from privacy.signing import sign_object
from stix_mappings.ids import collection_id, site_identity_id
from stix_mappings.indicator import extension_definitions, site_identity
from tests.fusion_hub.hub_testing import (
    HUB_NOW,
    ROUND_SECONDS,
    ROUND_START,
    TAXII,
    Site,
    enroll,
    evidence,
    make_config,
    running_hub,
    signed_summary,
    unsigned_summary,
)

SUMMARIES = collection_id("summaries")


@dataclass
class Hub:
    server: HubServer
    site_a: Site
    site_b: Site

    def summaries(self, site: Site) -> Collection:
        server = Server(self.server.discovery_url, user=site.site_id, password=site.password)
        return next(c for c in server.default.collections if c.title == "summaries")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(make_config(tmp_path, rounds={"quorum_sites": 3})) as server:
        yield Hub(server, enroll(server, "site-a"), enroll(server, "site-b"))


def post_raw(hub: Hub, site: Site, body: str) -> dict[str, Any]:
    response = requests.post(f"{hub.server.api_root_url}collections/{SUMMARIES}/objects/",
                             data=body.encode("utf-8"), auth=site.auth, timeout=10,
                             headers={"Accept": TAXII, "Content-Type": TAXII})
    assert response.status_code == 202
    return response.json()


def only_failure(status: Any) -> dict[str, Any]:
    assert (status.success_count, status.failure_count) == (0, 1)
    return status.failures[0]


def test_valid_signed_summary_accepted(hub: Hub) -> None:
    summary = signed_summary(hub.site_a, items=[evidence("203.0.113.9", 0.7)])

    status = hub.summaries(hub.site_a).add_objects({"objects": [summary]})

    assert (status.status, status.success_count, status.failure_count) == ("complete", 1, 0)
    assert status.successes == [{"id": summary["id"], "version": summary["modified"]}]
    record = hub.server.storage.get_round(int(ROUND_START.timestamp() * 1_000_000))
    assert record is not None and record.closed_us is None


def test_tampered_signature_rejected(hub: Hub) -> None:
    summary = signed_summary(hub.site_a, items=[evidence("203.0.113.9", 0.3)])
    summary["evidence"][0]["noised_mean_score"] = 0.99

    status = hub.summaries(hub.site_a).add_objects({"objects": [summary]})

    failure = only_failure(status)
    assert failure["id"] == summary["id"]
    assert failure["message"] == ("signature invalid: signature does not verify over the "
                                  "object's canonical JSON")
    assert hub.server.storage.count_objects(SUMMARIES) == 0


def test_summary_signed_by_other_key_rejected(hub: Hub) -> None:
    summary = sign_object(unsigned_summary("site-a"), hub.site_b.key)

    failure = only_failure(hub.summaries(hub.site_a).add_objects({"objects": [summary]}))

    assert "but the enrolled key has id" in failure["message"]


def test_second_summary_for_round_rejected(hub: Hub) -> None:
    first = signed_summary(hub.site_a, items=[evidence("203.0.113.9", 0.3)])
    replay = signed_summary(hub.site_a, items=[evidence("198.51.100.1", 0.9)])
    collection = hub.summaries(hub.site_a)
    collection.add_objects({"objects": [first]})

    failure = only_failure(collection.add_objects({"objects": [replay]}))

    assert failure["id"] == replay["id"]
    assert failure["message"] == ("site already contributed to round 2024-06-03T00:00:00.000Z; "
                                  "a round takes one summary per site")
    stored = hub.server.storage.contributions_between(0, 2**62)
    assert [json.loads(c.raw)["evidence"][0]["value"] for c in stored] == ["203.0.113.9"]


def test_identical_resend_accepted_without_change(hub: Hub) -> None:
    summary = signed_summary(hub.site_a, items=[evidence("203.0.113.9", 0.3)])
    body = json.dumps({"objects": [summary]})
    post_raw(hub, hub.site_a, body)

    again = post_raw(hub, hub.site_a, body)
    reformatted = post_raw(hub, hub.site_a, json.dumps({"objects": [summary]}, indent=2))

    for status in (again, reformatted):
        assert (status["success_count"], status["failure_count"]) == (1, 0)
        assert status["successes"][0]["message"] == "already stored; no change"
    assert hub.server.storage.count_objects(SUMMARIES) == 1


def test_site_posting_for_other_site_rejected(hub: Hub) -> None:
    forged = signed_summary(hub.site_b)

    failure = only_failure(hub.summaries(hub.site_a).add_objects({"objects": [forged]}))

    assert failure["message"] == "site-a may not post a summary for site site-b"


def test_revoked_site_cannot_post(hub: Hub) -> None:
    collection = hub.summaries(hub.site_a)
    hub.server.registry.revoke("site-a")

    with pytest.raises(requests.HTTPError) as excinfo:
        collection.add_objects({"objects": [signed_summary(hub.site_a)]})

    assert excinfo.value.response.status_code == 401
    assert hub.server.storage.count_objects(SUMMARIES) == 0


def test_site_reads_only_own_summaries(hub: Hub) -> None:
    hub.summaries(hub.site_a).add_objects({"objects": [signed_summary(hub.site_a)]})
    hub.summaries(hub.site_b).add_objects({"objects": [signed_summary(hub.site_b)]})

    seen_by_a = hub.summaries(hub.site_a).get_objects()
    seen_by_b = hub.summaries(hub.site_b).get_objects()

    assert [o["site"] for o in seen_by_a["objects"]] == ["site-a"]
    assert [o["site"] for o in seen_by_b["objects"]] == ["site-b"]


def test_consumer_reads_fused_not_summaries(hub: Hub) -> None:
    password = hub.server.registry.add_consumer("siem", read=["fused-indicators"])
    server = Server(hub.server.discovery_url, user="siem", password=password)
    by_title = {c.title: c for c in server.default.collections}

    fused = by_title["fused-indicators"].get_objects()
    with pytest.raises(requests.HTTPError) as excinfo:
        Collection(by_title["summaries"].url, user="siem", password=password,
                   collection_info={"id": SUMMARIES, "title": "summaries", "can_read": True,
                                    "can_write": False}).get_objects()

    assert {o["type"] for o in fused["objects"]} == {"identity", "extension-definition"}
    assert excinfo.value.response.status_code == 403


@pytest.mark.parametrize(("round_start", "reason"), [
    (ROUND_START + timedelta(seconds=60), "is not a multiple of the hub's round length (300 s)"),
    (HUB_NOW + timedelta(hours=1), "is in the future"),
    (HUB_NOW - timedelta(days=31), "is older than the hub's retention of 30 days"),
])
def test_round_checks_reject_summary(hub: Hub, round_start: Any, reason: str) -> None:
    summary = signed_summary(hub.site_a, round_start=round_start)

    failure = only_failure(hub.summaries(hub.site_a).add_objects({"objects": [summary]}))

    assert reason in failure["message"]


def test_summary_for_closed_round_rejected(hub: Hub) -> None:
    hub.summaries(hub.site_a).add_objects({"objects": [signed_summary(hub.site_a)]})
    hub.server.rounds.close_all_open_rounds()

    failure = only_failure(
        hub.summaries(hub.site_b).add_objects({"objects": [signed_summary(hub.site_b)]}))

    assert failure["message"] == ("round 2024-06-03T00:00:00.000Z is closed; its indicators "
                                  "are published")


def test_envelope_bad_objects_fail_alone(hub: Hub) -> None:
    """One bad object never sinks the envelope; each gets its own status entry."""
    identity = site_identity("site-a")
    definition = extension_definitions(identity["id"])[0]
    valid = signed_summary(hub.site_a, items=[evidence("203.0.113.9", 0.7)])
    invalid = copy.deepcopy(unsigned_summary(
        "site-a", round_start=ROUND_START + timedelta(seconds=ROUND_SECONDS)))
    invalid["privacy"]["epsilon"] = -1
    invalid["round_end"] = invalid["round_start"]
    invalid = sign_object(invalid, hub.site_a.key)
    unknown = {"type": "x-unknown-thing", "spec_version": "2.1",
               "id": "x-unknown-thing--7da04b83-5e6f-4c7d-9e8f-9a0b1c2d3e4f",
               "created": "2024-05-01T10:06:00.000Z", "modified": "2024-05-01T10:06:00.000Z",
               "payload": "opaque"}
    no_spec_version = {"type": "indicator",
                       "id": "indicator--8eb15c94-6f70-4d8e-8f90-ab1c2d3e4f50",
                       "created": "2024-05-01T10:07:00.000Z",
                       "modified": "2024-05-01T10:07:00.000Z",
                       "pattern": "[ipv4-addr:value = '203.0.113.9']", "pattern_type": "stix",
                       "valid_from": "2024-05-01T10:07:00Z"}
    texts = [json.dumps(obj) for obj in (identity, definition, valid, invalid, unknown,
                                         no_spec_version)]

    status = post_raw(hub, hub.site_a, '{"objects": [' + ", ".join(texts) + "]}")

    assert (status["status"], status["total_count"], status["success_count"],
            status["failure_count"]) == ("complete", 6, 3, 3)
    assert [s["id"] for s in status["successes"]] == [identity["id"], definition["id"],
                                                      valid["id"]]
    messages = {f["id"]: f["message"] for f in status["failures"]}
    assert "privacy.epsilon must be > 0; got -1" in messages[invalid["id"]]
    assert "round_end must be after round_start" in messages[invalid["id"]]
    assert messages[unknown["id"]] == (
        "type x-unknown-thing is not accepted in collection summaries: unknown type or "
        "extension-definition not registered")
    assert messages[no_spec_version["id"]].startswith("spec_version required (STIX 2.1)")

    served = requests.get(f"{hub.server.api_root_url}collections/{SUMMARIES}/objects/",
                          params={"match[version]": "all"}, auth=hub.site_a.auth,
                          headers={"Accept": TAXII}, timeout=10).text
    assert served == '{"more": false,"objects":[' + ",".join(texts[:3]) + "]}"


def test_identity_of_other_site_rejected(hub: Hub) -> None:
    failure = only_failure(hub.summaries(hub.site_a).add_objects(
        {"objects": [site_identity("site-b")]}))

    assert failure["message"] == (f"site-a may post only its own identity "
                                  f"{site_identity_id('site-a')}")


def test_quorum_of_sites_closes_round(tmp_path: Path) -> None:
    with running_hub(make_config(tmp_path, rounds={"quorum_sites": 2})) as server:
        sites = [enroll(server, "site-a"), enroll(server, "site-b")]
        collections = [Hub(server, sites[0], sites[1]).summaries(site) for site in sites]
        collections[0].add_objects({"objects": [signed_summary(sites[0])]})
        open_before = len(server.storage.open_rounds())

        collections[1].add_objects({"objects": [signed_summary(sites[1])]})

        assert open_before == 1
        assert server.storage.open_rounds() == []
        record = server.storage.get_round(int(ROUND_START.timestamp() * 1_000_000))
        assert record is not None
        assert (record.close_reason, record.contributors) == ("quorum", 2)


def test_lone_surrogate_in_failure_escaped(hub: Hub) -> None:
    """A lone surrogate that a failure entry repeats is written as its escape, not a 500."""
    identity = site_identity("site-a")
    wrong_site = signed_summary(hub.site_a)
    wrong_site["site"] = "\ud800"
    bad_id = {"type": "identity", "spec_version": "2.1", "id": "identity--\ud800"}
    # json.dumps writes a lone surrogate as the escape \ud800, which is valid JSON text.
    texts = [json.dumps(obj) for obj in (identity, wrong_site, bad_id)]

    status = post_raw(hub, hub.site_a, '{"objects": [' + ", ".join(texts) + "]}")

    assert (status["total_count"], status["success_count"], status["failure_count"]) == (3, 1, 2)
    assert status["successes"] == [{"id": identity["id"], "version": identity["modified"]}]
    messages = {f["id"]: f["message"] for f in status["failures"]}
    assert messages[wrong_site["id"]] == "site-a may not post a summary for site \\ud800"
    assert messages["identity--\\ud800"].startswith("id must be identity--<UUID>")
