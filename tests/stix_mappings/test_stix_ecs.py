"""STIX indicator to ECS 8.x threat-indicator document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from stix_mappings.ecs import confidence_level, ecs_document_id, indicator_to_ecs
from stix_mappings.errors import UnsupportedIndicator

MakeIndicator = Callable[..., dict[str, Any]]

DESCRIPTION = (
    "Fused by fti from the evidence of 2 sites in the round starting 2024-05-01T10:00:00.000Z: "
    "noisy-or score 0.734."
)

EXPECTED_DOCUMENT: dict[str, Any] = {
    "@timestamp": "2024-05-01T10:05:01.250Z",
    "ecs": {"version": "8.11.0"},
    "event": {
        "kind": "enrichment",
        "category": ["threat"],
        "type": ["indicator"],
        "module": "ti_fti",
        "dataset": "ti_fti.indicator",
    },
    "threat": {
        "feed": {"name": "fti"},
        "indicator": {
            "type": "ipv4-addr",
            "ip": "203.0.113.5",
            "confidence": "High",
            "first_seen": "2024-05-01T10:05:00.000Z",
            "last_seen": "2024-05-01T10:05:01.250Z",
            "modified_at": "2024-05-01T10:05:01.250Z",
            "provider": "hub-1",
            "marking": {"tlp": "AMBER"},
            "description": DESCRIPTION,
        },
    },
    "labels": {"is_ioc_transform_source": "false"},
    "tags": ["fti", "malicious-activity"],
    "fti": {
        "indicator": {
            "id": "indicator--38c7720b-5013-55e7-bbbb-91089342cf70",
            "pattern": "[ipv4-addr:value = '203.0.113.5']",
            "types": ["malicious-activity"],
            "valid_from": "2024-05-01T10:05:00.000Z",
            "revoked": False,
            "confidence": 73,
            "valid_until": "2024-05-02T10:05:00.000Z",
            "created_by_ref": "identity--adbb1d5f-7cdf-54fe-a810-88be0665ee88",
        },
        "fusion": {
            "strategy": "noisy-or",
            "fused_score": 0.734,
            "corroborating_sites": 2,
            "round_start": "2024-05-01T10:00:00.000Z",
        },
    },
}

# ECS 8.x allowed values (threat.indicator.type, .confidence, .marking.tlp).
ECS_INDICATOR_TYPES = {
    "autonomous-system", "artifact", "directory", "domain-name", "email-addr", "file", "ipv4-addr",
    "ipv6-addr", "mac-addr", "mutex", "port", "process", "software", "url", "user-account",
    "windows-registry-key", "x509-certificate",
}
ECS_CONFIDENCE_VALUES = {"Not Specified", "None", "Low", "Medium", "High"}
ECS_TLP_VALUES = {"WHITE", "CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"}


def test_indicator_to_ecs_exact_document(fused_indicator: dict[str, Any]) -> None:
    assert indicator_to_ecs(fused_indicator, provider="hub-1") == EXPECTED_DOCUMENT


def test_indicator_to_ecs_default_provider(fused_indicator: dict[str, Any]) -> None:
    assert indicator_to_ecs(fused_indicator)["threat"]["indicator"]["provider"] == "fti"


@pytest.mark.parametrize(
    ("kind", "value", "observable"),
    [
        ("ipv6-addr", "2001:db8::1", {"type": "ipv6-addr", "ip": "2001:db8::1"}),
        ("ipv4-addr", "198.51.100.0/24", {"type": "ipv4-addr"}),
        ("domain-name", "login.example.org", {"type": "domain-name", "url": {"domain": "login.example.org"}}),
        (
            "url",
            "https://Login.Example.org:8443/a/b?x=1",
            {
                "type": "url",
                "url": {
                    "full": "https://Login.Example.org:8443/a/b?x=1",
                    "original": "https://Login.Example.org:8443/a/b?x=1",
                    "scheme": "https",
                    "domain": "login.example.org",
                    "port": 8443,
                    "path": "/a/b",
                    "query": "x=1",
                },
            },
        ),
        ("url", "http://198.51.100.7", {"type": "url", "url": {
            "full": "http://198.51.100.7", "original": "http://198.51.100.7", "scheme": "http",
            "domain": "198.51.100.7"}}),
        ("file_path", "C:\\Temp\\x.ps1", {"type": "file", "file": {
            "path": "C:\\Temp\\x.ps1", "name": "x.ps1", "directory": "C:\\Temp"}}),
        ("md5", "d41d8cd98f00b204e9800998ecf8427e", {"type": "file", "file": {
            "hash": {"md5": "d41d8cd98f00b204e9800998ecf8427e"}}}),
    ],
)
def test_indicator_to_ecs_observable_fields(
    make_indicator: MakeIndicator, kind: str, value: str, observable: dict[str, Any]
) -> None:
    document = indicator_to_ecs(make_indicator(observable_type=kind, value=value))
    threat_indicator = document["threat"]["indicator"]

    shown = {key: threat_indicator[key] for key in ("type", "ip", "url", "file") if key in threat_indicator}
    assert shown == observable
    assert threat_indicator["type"] in ECS_INDICATOR_TYPES


def test_indicator_to_ecs_network_goes_to_fti(make_indicator: MakeIndicator) -> None:
    document = indicator_to_ecs(make_indicator(value="198.51.100.0/24"))

    assert "ip" not in document["threat"]["indicator"]
    assert document["fti"]["indicator"]["network"] == "198.51.100.0/24"


@pytest.mark.parametrize(
    ("confidence", "level"),
    [(None, "Not Specified"), (0, "None"), (1, "Low"), (29, "Low"), (30, "Medium"), (69, "Medium"),
     (70, "High"), (100, "High")],
)
def test_confidence_level_boundaries(confidence: int | None, level: str) -> None:
    assert confidence_level(confidence) == level
    assert level in ECS_CONFIDENCE_VALUES


@pytest.mark.parametrize("tlp", ["white", "green", "amber", "red"])
def test_marking_tlp_is_ecs_value(make_indicator: MakeIndicator, tlp: str) -> None:
    document = indicator_to_ecs(make_indicator(tlp=tlp))

    assert document["threat"]["indicator"]["marking"] == {"tlp": tlp.upper()}
    assert tlp.upper() in ECS_TLP_VALUES


def test_revoked_version_tagged(make_indicator: MakeIndicator) -> None:
    document = indicator_to_ecs(make_indicator(revoked=True))

    assert document["tags"] == ["fti", "malicious-activity", "revoked"]
    assert document["fti"]["indicator"]["revoked"] is True


def test_foreign_indicator_without_extension(fused_indicator: dict[str, Any]) -> None:
    del fused_indicator["extensions"]
    del fused_indicator["confidence"]
    del fused_indicator["object_marking_refs"]

    document = indicator_to_ecs(fused_indicator)

    assert "fusion" not in document["fti"]
    assert "marking" not in document["threat"]["indicator"]
    assert document["threat"]["indicator"]["confidence"] == "Not Specified"


def test_unsupported_pattern_raises(fused_indicator: dict[str, Any]) -> None:
    fused_indicator["pattern"] = "[ipv4-addr:value = '1.2.3.4'] OR [ipv4-addr:value = '5.6.7.8']"

    with pytest.raises(UnsupportedIndicator) as excinfo:
        indicator_to_ecs(fused_indicator)

    assert excinfo.value.indicator_id == "indicator--38c7720b-5013-55e7-bbbb-91089342cf70"


def test_ecs_document_id_names_version(fused_indicator: dict[str, Any]) -> None:
    expected = "indicator--38c7720b-5013-55e7-bbbb-91089342cf70@2024-05-01T10:05:01.250Z"

    assert ecs_document_id(fused_indicator) == expected
