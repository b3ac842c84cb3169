"""Round closing (quorum, deadline, ticker, exactly once) and what a closed round publishes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from stix2validator import ValidationOptions, validate_instance

from fusion_hub.fusion import FusedObservable
from fusion_hub.rounds import RoundOutcome
from fusion_hub.server import HubServer
from fusion_hub.timeutil import to_micros
from stix_mappings.ids import FUSION_EXTENSION_ID, collection_id, indicator_id
from tests.fusion_hub.hub_testing import (
    HUB_NOW,
    ROUND_SECONDS,
    ROUND_START,
    TAXII,
    SettableClock,
    Site,
    enroll,
    evidence,
    make_config,
    postgres_settings,
    running_hub,
    signed_summary,
)

FUSED = collection_id("fused-indicators")
SUMMARIES = collection_id("summaries")
BAD_IP = "203.0.113.9"
BAD_PATTERN = f"[ipv4-addr:value = '{BAD_IP}']"


@dataclass
class Federation:
    server: HubServer
    clock: SettableClock
    sites: list[Site]
    tmp_path: Path

    def post(self, site: Site, items: list[dict[str, Any]], round_index: int = 0) -> None:
        summary = signed_summary(site, items=items, round_start=ROUND_START + timedelta(
            seconds=round_index * ROUND_SECONDS))
        response = requests.post(
            f"{self.server.api_root_url}collections/{SUMMARIES}/objects/",
            data=json.dumps({"objects": [summary]}), auth=site.auth, timeout=10,
            headers={"Accept": TAXII, "Content-Type": TAXII})
        assert response.json()["success_count"] == 1

    def fused_objects(self, **params: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.server.api_root_url}collections/{FUSED}/objects/",
                                params=params, auth=self.sites[0].auth,
                                headers={"Accept": TAXII}, timeout=10)
        return list(response.json().get("objects", []))

    def indicators(self, **params: str) -> list[dict[str, Any]]:
        return [o for o in self.fused_objects(**params) if o["type"] == "indicator"]


@pytest.fixture(params=["sqlite", "postgresql"])
def federation(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Federation]:
    clock = SettableClock(HUB_NOW)
    storage = None
    if request.param == "postgresql":
        storage = postgres_settings(request.getfixturevalue("postgres_dsn"),
                                    request.getfixturevalue("postgres_schema"))
    # Lookback of one round: each round fuses only its own evidence.
    config = make_config(tmp_path, rounds={"quorum_sites": 2, "deadline_seconds": 600},
                         fusion={"indicator_ttl_seconds": 600, "lookback_rounds": 1},
                         storage=storage)
    with running_hub(config, clock) as server:
        yield Federation(server, clock, [enroll(server, "site-a"), enroll(server, "site-b")],
                         tmp_path)


def round_us(index: int) -> int:
    return to_micros(ROUND_START + timedelta(seconds=index * ROUND_SECONDS))


def test_round_closes_at_deadline_not_before(federation: Federation) -> None:
    federation.post(federation.sites[0], [evidence(BAD_IP, 0.9)])
    rounds = federation.server.rounds

    early = rounds.close_due_rounds(HUB_NOW + timedelta(seconds=599))
    due = rounds.close_due_rounds(HUB_NOW + timedelta(seconds=600))

    assert early == []
    assert [(o.reason, o.contributors, o.published) for o in due] == [("deadline", 1, 1)]


def test_ticker_closes_round_after_deadline(tmp_path: Path) -> None:
    clock = SettableClock(HUB_NOW)
    config = make_config(tmp_path, hub={"tick_seconds": 0.05},
                         rounds={"quorum_sites": 3, "deadline_seconds": 60})
    with running_hub(config, clock) as server:
        site = enroll(server, "site-a")
        Federation(server, clock, [site], tmp_path).post(site, [evidence(BAD_IP, 0.9)])
        clock.advance(61)

        deadline = time.monotonic() + 5
        while server.storage.open_rounds() and time.monotonic() < deadline:
            time.sleep(0.02)

        record = server.storage.get_round(round_us(0))
        assert record is not None
        assert record.close_reason == "deadline"


def test_round_closes_exactly_once(federation: Federation) -> None:
    federation.post(federation.sites[0], [evidence(BAD_IP, 0.9)])
    outcomes: list[RoundOutcome | None] = []
    lock = threading.Lock()

    def close() -> None:
        outcome = federation.server.rounds.close_round(ROUND_START, reason="forced")
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(1 for o in outcomes if o is not None) == 1
    assert len(federation.indicators(**{"match[version]": "all"})) == 1
    metrics = federation.server.metrics.render().decode()
    assert 'fti_hub_rounds_closed_total{reason="forced"} 1.0' in metrics


def test_two_sites_corroborate_published_score(federation: Federation) -> None:
    """w = 2/3 each: 1 - (1 - 0.4)(1 - 0.6) = 0.76; 198.51.100.1 alone: 2/3 * 0.5 < 0.5."""
    site_a, site_b = federation.sites
    federation.post(site_a, [evidence(BAD_IP, 0.6), evidence("198.51.100.1", 0.5)])
    federation.post(site_b, [evidence(BAD_IP, 0.9)])

    indicators = federation.indicators()

    assert len(indicators) == 1
    indicator = indicators[0]
    details = indicator["extensions"][FUSION_EXTENSION_ID]
    assert indicator["pattern"] == BAD_PATTERN
    assert indicator["id"] == indicator_id(BAD_PATTERN)
    assert indicator["confidence"] == 76
    assert details["fused_score"] == pytest.approx(0.76)
    assert details["corroborating_sites"] == 2
    assert details["strategy"] == "trust-weighted-noisy-or"
    assert details["round_start"] == "2024-06-03T00:00:00.000Z"
    assert indicator["indicator_types"] == ["malicious-activity"]
    assert indicator["valid_from"] == "2024-06-03T01:00:00Z"
    assert indicator["valid_until"] == "2024-06-03T01:10:00Z"


def test_lower_trust_lowers_score(federation: Federation) -> None:
    """site-b at Beta(2, 6) has w = 0.25: 1 - (1 - 2/3 * 0.6)(1 - 0.25 * 0.9) = 0.535."""
    federation.server.registry.record_outcomes("site-b", confirmed=0, refuted=5)
    site_a, site_b = federation.sites
    federation.post(site_a, [evidence(BAD_IP, 0.6)])
    federation.post(site_b, [evidence(BAD_IP, 0.9)])

    details = federation.indicators()[0]["extensions"][FUSION_EXTENSION_ID]

    assert details["fused_score"] == pytest.approx(1 - (1 - 0.4) * (1 - 0.225))


def test_next_round_adds_version_same_id(federation: Federation) -> None:
    site_a, site_b = federation.sites
    for site in (site_a, site_b):
        federation.post(site, [evidence(BAD_IP, 0.9)], round_index=0)
    federation.clock.advance(300)
    for site in (site_a, site_b):
        federation.post(site, [evidence(BAD_IP, 0.9)], round_index=1)

    versions = federation.indicators(**{"match[version]": "all"})

    assert [v["id"] for v in versions] == [indicator_id(BAD_PATTERN)] * 2
    assert versions[0]["created"] == versions[1]["created"] == "2024-06-03T01:00:00.000Z"
    assert [v["modified"] for v in versions] == ["2024-06-03T01:00:00.000Z",
                                                 "2024-06-03T01:05:00.000Z"]
    assert versions[1]["valid_until"] == "2024-06-03T01:15:00Z"
    assert [v["extensions"][FUSION_EXTENSION_ID]["round_start"] for v in versions] == [
        "2024-06-03T00:00:00.000Z", "2024-06-03T00:05:00.000Z"]


def test_unconfirmed_indicator_revoked_after_ttl(federation: Federation) -> None:
    site_a, site_b = federation.sites
    for site in (site_a, site_b):
        federation.post(site, [evidence(BAD_IP, 0.9)], round_index=0)
    federation.clock.advance(700)
    for site in (site_a, site_b):
        federation.post(site, [evidence("198.51.100.1", 0.2)], round_index=1)
    revoked_round = federation.server.storage.get_round(round_us(1))

    latest = [i for i in federation.indicators() if i["pattern"] == BAD_PATTERN]

    assert revoked_round is not None and revoked_round.revoked == 1
    assert latest[0]["revoked"] is True
    assert latest[0]["modified"] == "2024-06-03T01:11:40.000Z"
    assert latest[0]["valid_until"] == "2024-06-03T01:10:00Z"
    metrics = federation.server.metrics.render().decode()
    assert "fti_hub_indicators_revoked_total 1.0" in metrics


def test_lookback_reuses_earlier_rounds(tmp_path: Path) -> None:
    clock = SettableClock(HUB_NOW)
    config = make_config(tmp_path, fusion={"lookback_rounds": 2})
    with running_hub(config, clock) as server:
        federation = Federation(server, clock, [enroll(server, "site-a"),
                                                enroll(server, "site-b")], tmp_path)
        for site in federation.sites:
            federation.post(site, [evidence(BAD_IP, 0.9)], round_index=0)
        clock.advance(300)
        for site in federation.sites:
            federation.post(site, [], round_index=1)

        versions = federation.indicators(**{"match[version]": "all"})

        assert [v["extensions"][FUSION_EXTENSION_ID]["round_start"] for v in versions] == [
            "2024-06-03T00:00:00.000Z", "2024-06-03T00:05:00.000Z"]


def test_returning_observable_starts_new_lifetime(federation: Federation) -> None:
    """STIX allows no version after a revocation, so a returning address gets a new id."""
    site_a, site_b = federation.sites
    for index, items in enumerate(([evidence(BAD_IP, 0.9)], [], [evidence(BAD_IP, 0.9)])):
        federation.clock.set(HUB_NOW + timedelta(seconds=700 * index))
        for site in (site_a, site_b):
            federation.post(site, items, round_index=index)
    outcome = federation.server.storage.get_round(round_us(2))

    versions = federation.indicators(**{"match[version]": "all"})

    assert [(v["id"], v.get("revoked", False)) for v in versions] == [
        (indicator_id(BAD_PATTERN), False),
        (indicator_id(BAD_PATTERN), True),
        (indicator_id(BAD_PATTERN, 1), False),
    ]
    assert versions[2]["pattern"] == BAD_PATTERN
    assert versions[2]["created"] == versions[2]["modified"]
    assert outcome is not None and outcome.refused == 0


def test_invalid_observable_refused_and_counted(federation: Federation) -> None:
    server = federation.server
    fused = [FusedObservable("ipv4-addr", "999.1.1.1", 0.9, 2, ("site-a", "site-b")),
             FusedObservable("domain-name", "evil.example", 0.9, 2, ("site-a", "site-b"))]

    with server.storage.transaction():
        report = server.publisher.publish_round(fused, round_start=ROUND_START, now=HUB_NOW,
                                                strategy="trust-weighted-noisy-or")

    assert [i["pattern"] for i in report.published] == ["[domain-name:value = 'evil.example']"]
    assert dict(report.refused) == {"invalid-value": 1}
    assert 'fti_hub_indicators_refused_total{reason="invalid-value"} 1.0' in (
        server.metrics.render().decode())


def test_published_objects_pass_stix2_validator(federation: Federation) -> None:
    site_a, site_b = federation.sites
    federation.post(site_a, [evidence(BAD_IP, 0.9), evidence("evil.example", 0.8,
                                                               observable_type="domain-name")])
    federation.post(site_b, [evidence(BAD_IP, 0.7), evidence("evil.example", 0.6,
                                                               observable_type="domain-name")])
    objects = federation.fused_objects(**{"match[version]": "all"})
    options = ValidationOptions(version="2.1")

    results = [validate_instance(obj, options) for obj in objects]

    assert sorted(o["type"] for o in objects) == [
        "extension-definition", "extension-definition", "identity", "indicator", "indicator"]
    for obj, result in zip(objects, results, strict=True):
        assert (obj["id"], result.is_valid, [e.message for e in result.errors]) == (
            obj["id"], True, [])


def test_sinks_receive_parseable_lines(federation: Federation) -> None:
    site_a, site_b = federation.sites
    federation.post(site_a, [evidence(BAD_IP, 0.6)])
    federation.post(site_b, [evidence(BAD_IP, 0.9)])
    indicator = federation.indicators()[0]

    hec_lines = (federation.tmp_path / "hec.ndjson").read_text().splitlines()
    bulk_lines = (federation.tmp_path / "bulk.ndjson").read_text().splitlines()

    assert len(hec_lines) == 1
    event = json.loads(hec_lines[0])
    assert (event["host"], event["source"], event["sourcetype"]) == ("test-hub", "fti",
                                                                     "fti:indicator")
    assert event["event"]["ip"] == BAD_IP
    assert event["event"]["confidence"] == 76
    assert all(not isinstance(v, dict) for v in event["fields"].values())
    assert len(bulk_lines) == 2
    action, document = (json.loads(line) for line in bulk_lines)
    assert action == {"create": {"_index": "logs-ti_fti.indicator-default",
                                 "_id": f"{indicator['id']}@{indicator['modified']}"}}
    assert document["threat"]["indicator"]["ip"] == BAD_IP
    assert document["event"]["kind"] == "enrichment"
    assert document["@timestamp"] == "2024-06-03T01:00:00.000Z"


def test_close_all_open_rounds_oldest_first(federation: Federation) -> None:
    site_a = federation.sites[0]
    federation.post(site_a, [evidence(BAD_IP, 0.9)], round_index=1)
    federation.post(site_a, [evidence(BAD_IP, 0.9)], round_index=0)

    outcomes = federation.server.rounds.close_all_open_rounds()

    assert [(o.round_start, o.reason) for o in outcomes] == [
        (ROUND_START, "forced"), (ROUND_START + timedelta(seconds=ROUND_SECONDS), "forced")]
    assert federation.server.rounds.close_all_open_rounds() == []
