"""The demo end to end: five agents, one hub, real captures, every output file checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fti.demo import SITES, run_demo
from stix_mappings.validation import validate_stix


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-out")
    assert run_demo(out_dir=out) == 0
    return out


def test_demo_bundle_has_corroborated_valid_indicators(demo_out: Path) -> None:
    bundle = json.loads((demo_out / "fused-indicators.json").read_text())
    indicators = [o for o in bundle["objects"] if o["type"] == "indicator"]

    assert bundle["type"] == "bundle"
    assert indicators, "the demo published no indicator"
    assert validate_stix(bundle["objects"]) == []
    corroborated = [
        i for i in indicators
        if any(e.get("corroborating_sites", 0) > 1 for e in i.get("extensions", {}).values() if isinstance(e, dict))
    ]
    assert corroborated, "no indicator is corroborated by more than one site"


def test_demo_siem_files_match_indicators(demo_out: Path) -> None:
    bundle = json.loads((demo_out / "fused-indicators.json").read_text())
    indicator_ids = {o["id"] for o in bundle["objects"] if o["type"] == "indicator"}
    hec = [json.loads(line) for line in (demo_out / "splunk-hec.ndjson").read_text().splitlines()]
    bulk = [json.loads(line) for line in (demo_out / "elastic-bulk.ndjson").read_text().splitlines()]

    assert len(hec) >= len(indicator_ids)
    assert all(event["sourcetype"] == "fti:indicator" and event["event"] for event in hec)
    actions, documents = bulk[0::2], bulk[1::2]
    assert len(actions) == len(documents) == len(hec)
    assert all(a["create"]["_index"] == "logs-ti_fti.indicator-default" for a in actions)
    assert all(d["event"]["module"] == "ti_fti" and d["threat"]["indicator"]["type"] for d in documents)


def test_demo_alerts_name_local_entities_only(demo_out: Path) -> None:
    alerts = [json.loads(line) for line in (demo_out / "alerts.jsonl").read_text().splitlines()]
    site_ids = {site.site_id for site in SITES}

    assert alerts, "no site raised a local alert"
    assert {a["site"] for a in alerts} <= site_ids
    assert all(a["indicator_id"].startswith("indicator--") for a in alerts)
    assert all(a["connections"] >= 1 for a in alerts)


@pytest.mark.slow
def test_secure_demo_publishes_fused_indicators(tmp_path: Path) -> None:
    """The five sites in secure mode: the hub fuses from unmasked sums and the sites' reveals."""
    out = tmp_path / "secure-out"

    assert run_demo(out_dir=out, secure=True) == 0

    bundle = json.loads((out / "fused-indicators.json").read_text())
    indicators = [o for o in bundle["objects"] if o["type"] == "indicator"]
    assert indicators, "the secure demo published no indicator"
    assert validate_stix(bundle["objects"]) == []
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert alerts, "no site raised a local alert in secure mode"
