"""STIX indicator to Splunk HEC event, and local checks of HEC events (field case 015)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stix_mappings.splunk import hec_event_problems, indicator_to_hec_event

MakeIndicator = Callable[..., dict[str, Any]]

EXPECTED_EVENT: dict[str, Any] = {
    "time": 1714557901.25,
    "host": "hub.example.org",
    "source": "fti",
    "sourcetype": "fti:indicator",
    "index": "threat",
    "event": {
        "threat_key": "fti",
        "threat_collection": "ip_intel",
        "threat_match_field": "ip",
        "threat_match_value": "203.0.113.5",
        "ip": "203.0.113.5",
        "description": (
            "Fused by fti from the evidence of 2 sites in the round starting 2024-05-01T10:00:00.000Z: "
            "noisy-or score 0.734."
        ),
        "confidence": 73,
        "confidence_level": "High",
        "weight": 3,
        "indicator_id": "indicator--38c7720b-5013-55e7-bbbb-91089342cf70",
        "indicator_types": ["malicious-activity"],
        "observable_type": "ipv4-addr",
        "pattern": "[ipv4-addr:value = '203.0.113.5']",
        "modified": "2024-05-01T10:05:01.250Z",
        "valid_from": "2024-05-01T10:05:00.000Z",
        "valid_until": "2024-05-02T10:05:00.000Z",
        "revoked": False,
        "tlp": "AMBER",
        "fusion_strategy": "noisy-or",
        "fused_score": 0.734,
        "corroborating_sites": 2,
        "round_start": "2024-05-01T10:00:00.000Z",
    },
    "fields": {
        "indicator_id": "indicator--38c7720b-5013-55e7-bbbb-91089342cf70",
        "observable_type": "ipv4-addr",
        "threat_collection": "ip_intel",
        "revoked": "false",
        "tlp": "AMBER",
    },
}


def test_indicator_to_hec_event_exact_document(fused_indicator: dict[str, Any]) -> None:
    event = indicator_to_hec_event(fused_indicator, index="threat", host="hub.example.org")

    assert event == EXPECTED_EVENT
    assert json.dumps(event["time"]) == "1714557901.25"


def test_hec_event_without_index(fused_indicator: dict[str, Any]) -> None:
    event = indicator_to_hec_event(fused_indicator, index=None, host="hub.example.org")

    assert "index" not in event
    assert hec_event_problems(event) == []


@pytest.mark.parametrize(
    ("kind", "value", "collection", "observable"),
    [
        ("ipv6-addr", "2001:db8::1", "ip_intel", {"ip": "2001:db8::1"}),
        ("domain-name", "login.example.org", "domain_intel", {"domain": "login.example.org"}),
        ("url", "https://login.example.org/a", "http_intel", {"url": "https://login.example.org/a"}),
        ("file_name", "o'brien.exe", "file_intel", {"file_name": "o'brien.exe"}),
        ("file_path", "/tmp/run.sh", "file_intel", {"file_name": "run.sh", "file_path": "/tmp"}),
        ("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709", "file_intel",
         {"file_hash": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}),
    ],
)
def test_hec_event_intel_collection_fields(
    make_indicator: MakeIndicator, kind: str, value: str, collection: str, observable: dict[str, str]
) -> None:
    event = indicator_to_hec_event(make_indicator(observable_type=kind, value=value), index=None, host="h")

    assert event["event"]["threat_collection"] == collection
    assert {key: event["event"][key] for key in observable} == observable
    assert hec_event_problems(event) == []


@pytest.mark.parametrize(("fused_score", "weight"), [(0.1, 1), (0.5, 2), (0.9, 3)])
def test_hec_weight_follows_confidence(make_indicator: MakeIndicator, fused_score: float, weight: int) -> None:
    event = indicator_to_hec_event(make_indicator(fused_score=fused_score), index=None, host="h")

    assert event["event"]["weight"] == weight


def test_hec_fields_flat_strings(make_indicator: MakeIndicator) -> None:
    event = indicator_to_hec_event(make_indicator(revoked=True), index="threat", host="h")

    assert all(isinstance(value, str) for value in event["fields"].values())
    assert event["fields"]["revoked"] == "true"


def test_same_version_same_time(fused_indicator: dict[str, Any]) -> None:
    first = indicator_to_hec_event(fused_indicator, index=None, host="h")
    second = indicator_to_hec_event(dict(fused_indicator), index=None, host="h")

    assert first["time"] == second["time"] == 1714557901.25


def _case_015_events(cases_dir: Path) -> list[dict[str, Any]]:
    lines = (cases_dir / "015-splunk-hec-400-invalid-event.input.txt").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_case_015_batch_problems_found_before_sending(cases_dir: Path) -> None:
    events = _case_015_events(cases_dir)

    problems = [hec_event_problems(event) for event in events]

    assert problems == [
        [],
        ["event must not be blank (HEC code 13)"],
        [
            "fields.window must be a string, a number or a flat array of them (HEC code 15); "
            'got {"start": "2024-05-01T09:55:00Z", "end": "2024-05-01T10:00:00Z"}'
        ],
    ]


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"time": 1.0}, "event must not be blank (HEC code 13)"),
        ({"event": {}, "time": 1.0}, "event must not be blank (HEC code 13)"),
        ({"event": {"a": 1}, "time": "now"}, "time must be epoch seconds as a number; got 'now'"),
        ({"event": {"a": 1}, "fields": ["a"]}, "fields must be an object; got list"),
        ({"event": {"a": 1}, "fields": {"tags": [{"k": "v"}]}},
         'fields.tags must be a string, a number or a flat array of them (HEC code 15); got [{"k": "v"}]'),
        ({"event": {"a": float("nan")}}, "event is not serializable as JSON: Out of range float values are not JSON compliant"),
    ],
)
def test_hec_event_problems_each_rule(event: dict[str, Any], problem: str) -> None:
    assert hec_event_problems(event) == [problem]


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("ja3", "e7d705a3286e19ea42f587b344ee6865", "ja3"),
        ("ja3s", "f4febc55ea12b31ae17cfb7e614afda8", "ja3s"),
        ("x509-sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709", "certificate_sha1"),
    ],
)
def test_hec_fingerprints_stay_out_of_file_intel(make_indicator: MakeIndicator, kind: str, value: str,
                                                 field: str) -> None:
    """No ES collection contains a TLS or certificate fingerprint, so none is claimed for one."""
    event = indicator_to_hec_event(make_indicator(observable_type=kind, value=value), index=None, host="h")

    assert event["event"]["threat_collection"] is None
    assert "threat_collection" not in event["fields"]
    assert event["event"][field] == value
    assert "file_hash" not in event["event"]
    assert hec_event_problems(event) == []
