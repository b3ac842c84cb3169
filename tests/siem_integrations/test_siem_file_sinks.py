"""Tests of the Splunk HEC and Elasticsearch bulk NDJSON sinks on real fused indicators."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from siem_integrations.elastic_bulk_file import ElasticBulkFileSink
from siem_integrations.errors import SinkEventInvalid
from siem_integrations.splunk_hec_file import SplunkHecFileSink, validate_hec_event
from stix_mappings.indicator import build_fused_indicator

MOMENT = datetime(2024, 6, 3, 1, 0, tzinfo=timezone.utc)


def indicator(value: str, observable_type: str = "ipv4-addr",
              revoked: bool = False) -> dict[str, Any]:
    return build_fused_indicator(
        observable_type=observable_type, value=value, fused_score=0.76, corroborating_sites=2,
        strategy="trust-weighted-noisy-or", round_start=MOMENT - timedelta(hours=1),
        valid_from=MOMENT, valid_until=MOMENT + timedelta(days=1), created=MOMENT,
        modified=MOMENT, hub_identity="identity--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f",
        revoked=revoked,
    )


def test_hec_sink_writes_one_event_per_indicator(tmp_path: Path) -> None:
    sink = SplunkHecFileSink(tmp_path / "hec.ndjson", index="threat", host="hub-1")

    result = sink.write_indicators([indicator("203.0.113.9"),
                                    indicator("evil.example", "domain-name")])

    events = [json.loads(line) for line in (tmp_path / "hec.ndjson").read_text().splitlines()]
    assert (result.written, result.rejected) == (2, ())
    assert [e["index"] for e in events] == ["threat", "threat"]
    assert [e["host"] for e in events] == ["hub-1", "hub-1"]
    assert events[0]["time"] == pytest.approx(MOMENT.timestamp())
    assert events[0]["event"]["ip"] == "203.0.113.9"
    assert events[1]["event"]["domain"] == "evil.example"
    for event in events:
        validate_hec_event(event, event_id="check")


def test_hec_sink_leaves_out_unmappable_indicator(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    broken = indicator("203.0.113.9")
    broken["pattern"] = "[process:name = 'x']"
    sink = SplunkHecFileSink(tmp_path / "hec.ndjson", index=None, host="hub-1")

    result = sink.write_indicators([broken, indicator("203.0.113.10")])

    lines = (tmp_path / "hec.ndjson").read_text().splitlines()
    assert result.written == 1
    assert [r[0] for r in result.rejected] == [broken["id"]]
    assert len(lines) == 1
    assert "index" not in json.loads(lines[0])
    assert "1 of 2 events left out" in caplog.text


@pytest.mark.parametrize(("event", "reason"), [
    ({"event": ""}, "event must not be blank (HEC code 13)"),
    ({"event": {"a": 1}, "fields": {"window": {"start": 1}}}, "fields.window must be"),
    ({"event": {"a": 1}, "extra": 1}, "HEC accepts no top-level key 'extra'"),
    ({"event": {"a": 1}, "host": 7}, "'host' must be a string"),
    ({"event": {"a": 1}, "time": "now"}, "time must be epoch seconds"),
])
def test_validate_hec_event_rejects(event: dict[str, Any], reason: str) -> None:
    with pytest.raises(SinkEventInvalid) as excinfo:
        validate_hec_event(event, event_id="indicator--x")

    assert excinfo.value.event_id == "indicator--x"
    assert reason in excinfo.value.reason


def test_bulk_sink_writes_create_action_and_document(tmp_path: Path) -> None:
    sink = ElasticBulkFileSink(tmp_path / "bulk.ndjson")
    fused = indicator("203.0.113.9")
    revoked = indicator("203.0.113.9", revoked=True)

    result = sink.write_indicators([fused, revoked])

    lines = [json.loads(line) for line in (tmp_path / "bulk.ndjson").read_text().splitlines()]
    assert result.written == 2
    assert len(lines) == 4
    assert lines[0] == {"create": {"_index": "logs-ti_fti.indicator-default",
                                   "_id": f"{fused['id']}@2024-06-03T01:00:00.000Z"}}
    document = lines[1]
    assert document["@timestamp"] == "2024-06-03T01:00:00.000Z"
    assert document["event"]["dataset"] == "ti_fti.indicator"
    assert document["threat"]["indicator"]["type"] == "ipv4-addr"
    assert document["threat"]["indicator"]["ip"] == "203.0.113.9"
    assert document["threat"]["indicator"]["confidence"] == "High"
    assert list(lines[2]) == ["create"]


def test_bulk_sink_custom_index(tmp_path: Path) -> None:
    sink = ElasticBulkFileSink(tmp_path / "bulk.ndjson", index="logs-ti_fti.indicator-lab")

    sink.write_indicators([indicator("203.0.113.9")])

    action = json.loads((tmp_path / "bulk.ndjson").read_text().splitlines()[0])
    assert action["create"]["_index"] == "logs-ti_fti.indicator-lab"
