"""Check indicator documents against the bundled ECS field definitions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from siem_integrations.ecs_fields import ecs_document_problems, load_ecs_fields
from stix_mappings.ecs import indicator_to_ecs
from stix_mappings.indicator import build_fused_indicator

MOMENT = datetime(2024, 6, 3, 1, 0, tzinfo=timezone.utc)
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def indicator(kind: str, value: str, *, fused_score: float = 0.76, tlp: str = "amber",
              revoked: bool = False) -> dict[str, Any]:
    return build_fused_indicator(
        observable_type=kind, value=value, fused_score=fused_score, corroborating_sites=2,
        strategy="trust-weighted-noisy-or", round_start=MOMENT - timedelta(hours=1),
        valid_from=MOMENT, valid_until=MOMENT + timedelta(days=1), created=MOMENT,
        modified=MOMENT, hub_identity="identity--6f1c2a4e-8d3b-4c7a-9e0f-1a2b3c4d5e6f",
        tlp=tlp, revoked=revoked,
    )


@pytest.mark.parametrize("kind, value", [
    ("ipv4-addr", "203.0.113.9"),
    ("ipv4-addr", "198.51.100.0/24"),
    ("ipv6-addr", "2001:db8::1"),
    ("domain-name", "login.example.org"),
    ("url", "https://login.example.org:8443/a/b?c=d"),
    ("sha256", SHA256),
    ("file_name", "dropper.exe"),
    ("file_path", "C:\\Users\\alice\\AppData\\x.ps1"),
    ("ja3", "e7d705a3286e19ea42f587b344ee6865"),
    ("ja3s", "f4febc55ea12b31ae17cfb7e614afda8"),
    ("x509-sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("x509-sha256", SHA256),
])
def test_indicator_documents_follow_ecs(kind: str, value: str) -> None:
    assert ecs_document_problems(indicator_to_ecs(indicator(kind, value))) == []


@pytest.mark.parametrize("fused_score", [0.0, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("tlp", ["white", "green", "amber", "red"])
def test_confidence_and_tlp_expected_values(fused_score: float, tlp: str) -> None:
    document = indicator_to_ecs(indicator("ipv4-addr", "203.0.113.9", fused_score=fused_score,
                                          tlp=tlp))

    assert ecs_document_problems(document) == []


def test_rule_fields_have_required_values() -> None:
    document = indicator_to_ecs(indicator("ipv4-addr", "203.0.113.9"))

    assert document["event"]["kind"] == "enrichment"
    assert document["event"]["category"] == ["threat"]
    assert document["event"]["type"] == ["indicator"]
    assert document["event"]["module"] == "ti_fti"
    assert document["threat"]["feed"]["name"] == "fti"
    assert document["threat"]["indicator"]["first_seen"] == "2024-06-03T01:00:00.000Z"
    assert document["threat"]["indicator"]["last_seen"] == "2024-06-03T01:00:00.000Z"


def test_unknown_field_reported() -> None:
    document = indicator_to_ecs(indicator("ipv4-addr", "203.0.113.9"))
    document["threat"]["indicator"]["score"] = 0.7

    assert ecs_document_problems(document) == [
        "threat.indicator.score is not an ECS field; move it under fti.*"]


def test_disallowed_category_reported() -> None:
    document = indicator_to_ecs(indicator("ipv4-addr", "203.0.113.9"))
    document["event"]["category"] = ["intel"]

    problems = ecs_document_problems(document)

    assert len(problems) == 1
    assert problems[0].startswith("event.category value 'intel' is not in the ECS allowed_values")


def test_unexpected_confidence_reported() -> None:
    document = indicator_to_ecs(indicator("ipv4-addr", "203.0.113.9"))
    document["threat"]["indicator"]["confidence"] = "Med"

    problems = ecs_document_problems(document)

    assert problems[0].startswith(
        "threat.indicator.confidence value 'Med' is not in the ECS expected_values")


def test_wrong_ip_type_reported() -> None:
    document = indicator_to_ecs(indicator("ipv4-addr", "203.0.113.9"))
    document["threat"]["indicator"]["ip"] = "198.51.100.0/24"

    assert ecs_document_problems(document) == [
        "threat.indicator.ip is an ECS ip, so it must be one IPv4 or IPv6 address; "
        "got '198.51.100.0/24'"]


def test_missing_timestamp_reported() -> None:
    document = indicator_to_ecs(indicator("ipv4-addr", "203.0.113.9"))
    del document["@timestamp"]

    assert ecs_document_problems(document) == ["@timestamp is required by ECS and missing"]


def test_bundled_definitions_cover_threat_indicator() -> None:
    fields = load_ecs_fields()

    assert fields["threat.indicator.confidence"]["expected_values"] == [
        "Not Specified", "None", "Low", "Medium", "High"]
    assert "enrichment" in fields["event.kind"]["allowed_values"]
    assert fields["threat.indicator.ip"]["type"] == "ip"


@pytest.mark.parametrize("kind, value, extra", [
    ("ja3", "e7d705a3286e19ea42f587b344ee6865", {"ja3": "e7d705a3286e19ea42f587b344ee6865"}),
    ("x509-sha256", SHA256, {"certificate_hash": {"sha256": SHA256}}),
])
def test_fingerprints_go_to_fti_not_file_hash(kind: str, value: str, extra: dict[str, Any]) -> None:
    """ECS has no indicator field for these, and a fingerprint is not a file hash."""
    document = indicator_to_ecs(indicator(kind, value))

    assert "file" not in document["threat"]["indicator"]
    assert {key: document["fti"]["indicator"][key] for key in extra} == extra
