"""Fused indicators, identities and extension definitions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import stix2
from stix2validator import ValidationOptions, validate_instance

from stix_mappings.errors import IndicatorInvalid, PatternRejected, UnsupportedIndicator
from stix_mappings.ids import FUSION_EXTENSION_ID, SUMMARY_EXTENSION_ID, hub_identity_id, indicator_id
from stix_mappings.indicator import (
    extension_definitions,
    hub_identity,
    read_fused_indicator,
    site_identity,
)
from stix_mappings.validation import validate_stix

MakeIndicator = Callable[..., dict[str, Any]]

EXPECTED_INDICATOR: dict[str, Any] = {
    "type": "indicator",
    "spec_version": "2.1",
    "id": "indicator--38c7720b-5013-55e7-bbbb-91089342cf70",
    "created_by_ref": "identity--adbb1d5f-7cdf-54fe-a810-88be0665ee88",
    "created": "2024-05-01T10:05:00.000Z",
    "modified": "2024-05-01T10:05:01.250Z",
    "name": "fti fused ipv4-addr 203.0.113.5",
    "description": (
        "Fused by fti from the evidence of 2 sites in the round starting 2024-05-01T10:00:00.000Z: "
        "noisy-or score 0.734."
    ),
    "indicator_types": ["malicious-activity"],
    "pattern": "[ipv4-addr:value = '203.0.113.5']",
    "pattern_type": "stix",
    "pattern_version": "2.1",
    "valid_from": "2024-05-01T10:05:00Z",
    "valid_until": "2024-05-02T10:05:00Z",
    "confidence": 73,
    "object_marking_refs": ["marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"],
    "extensions": {
        "extension-definition--c1848ec5-a246-4e74-ab7b-64b6837a0093": {
            "extension_type": "property-extension",
            "strategy": "noisy-or",
            "fused_score": 0.734,
            "corroborating_sites": 2,
            "round_start": "2024-05-01T10:00:00.000Z",
        }
    },
}


def test_build_fused_indicator_exact_document(fused_indicator: dict[str, Any]) -> None:
    assert fused_indicator == EXPECTED_INDICATOR


def test_indicator_marking_is_stix2_tlp_amber(fused_indicator: dict[str, Any]) -> None:
    assert fused_indicator["object_marking_refs"] == [stix2.TLP_AMBER.id]


@pytest.mark.parametrize(
    ("tlp", "marking"),
    [("white", stix2.TLP_WHITE), ("green", stix2.TLP_GREEN), ("AMBER", stix2.TLP_AMBER), ("red", stix2.TLP_RED)],
)
def test_indicator_tlp_choices(make_indicator: MakeIndicator, tlp: str, marking: Any) -> None:
    assert make_indicator(tlp=tlp)["object_marking_refs"] == [marking.id]


def test_indicator_round_trips_through_stix2_unchanged(fused_indicator: dict[str, Any]) -> None:
    parsed = stix2.parse(fused_indicator, allow_custom=True)

    assert isinstance(parsed, stix2.v21.Indicator)
    assert parsed.serialize() == json.dumps(fused_indicator)


def test_indicator_with_millisecond_validity_round_trips(make_indicator: MakeIndicator) -> None:
    start = datetime(2024, 5, 1, 10, 5, 0, 120_000, tzinfo=timezone.utc)
    indicator = make_indicator(valid_from=start, valid_until=start + timedelta(hours=1))

    parsed = stix2.parse(json.dumps(indicator), allow_custom=True)

    assert indicator["valid_from"] == "2024-05-01T10:05:00.12Z"
    assert parsed.serialize() == json.dumps(indicator)


def test_revoked_version_round_trips_and_validates(make_indicator: MakeIndicator, hub: dict[str, Any]) -> None:
    revoked = make_indicator(revoked=True, modified=datetime(2024, 5, 2, 10, 5, tzinfo=timezone.utc))

    parsed = stix2.parse(revoked, allow_custom=True)

    assert revoked["revoked"] is True
    assert revoked["id"] == EXPECTED_INDICATOR["id"]
    assert parsed.serialize() == json.dumps(revoked)
    assert validate_stix([hub, revoked]) == []


def test_indicator_validates_with_hub_and_extension_definitions(
    fused_indicator: dict[str, Any], hub: dict[str, Any]
) -> None:
    assert validate_stix([hub, *extension_definitions(hub["id"]), fused_indicator]) == []


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"strict": True, "disabled": "uuid-check"},
        {"interop": True, "disabled": "uuid-check"},
        {"strict": True, "enabled": "custom-prefix", "disabled": "uuid-check"},
    ],
    ids=["default", "strict", "interop", "strict-custom-prefix"],
)
def test_oasis_validator_reports_no_errors(
    options: dict[str, Any], fused_indicator: dict[str, Any], hub: dict[str, Any], valid_summary: dict[str, Any]
) -> None:
    bundle = {
        "type": "bundle",
        "id": "bundle--5b8e2f61-3c4d-4a5b-9c6d-7e8f9a0b1c2d",
        "objects": [hub, site_identity("site-a"), *extension_definitions(hub["id"]), valid_summary, fused_indicator],
    }

    result = validate_instance(bundle, ValidationOptions(**options))

    assert [error.message for error in result.errors] == []


def test_oasis_validator_default_warns_only_about_uuid_versions(
    fused_indicator: dict[str, Any], hub: dict[str, Any]
) -> None:
    """Our shared ids are UUIDv5 by design; the validator recommends UUIDv4 (check 103)."""
    bundle = {"type": "bundle", "id": "bundle--5b8e2f61-3c4d-4a5b-9c6d-7e8f9a0b1c2d", "objects": [hub, fused_indicator]}

    result = validate_instance(bundle, ValidationOptions())

    assert all("{103}" in warning for warning in result.warnings)
    assert len(result.warnings) == 2


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("ipv4-addr", "203.0.113.5"),
        ("ipv4", "198.51.100.0/24"),
        ("ipv6-addr", "2001:db8::1"),
        ("domain-name", "login.example.org"),
        ("url", "https://login.example.org/o'brien?q=\\x"),
        ("file_path", "C:\\Users\\alice\\AppData\\Local\\Temp\\x.ps1"),
        ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
    ],
)
def test_every_kind_builds_valid_indicator(make_indicator: MakeIndicator, kind: str, value: str) -> None:
    indicator = make_indicator(observable_type=kind, value=value)

    assert validate_stix([indicator]) == []
    assert stix2.parse(indicator, allow_custom=True).serialize() == json.dumps(indicator)


@pytest.mark.parametrize(
    ("fused_score", "confidence", "indicator_types"),
    [
        (0.0, 0, ["anomalous-activity"]),
        (0.499, 50, ["anomalous-activity"]),
        (0.5, 50, ["malicious-activity"]),
        (0.734, 73, ["malicious-activity"]),
        (1, 100, ["malicious-activity"]),
    ],
)
def test_indicator_confidence_and_types_follow_score(
    make_indicator: MakeIndicator, fused_score: float, confidence: int, indicator_types: list[str]
) -> None:
    indicator = make_indicator(fused_score=fused_score)

    assert indicator["confidence"] == confidence
    assert indicator["indicator_types"] == indicator_types


def test_indicator_id_same_for_equal_observables(make_indicator: MakeIndicator) -> None:
    first = make_indicator(observable_type="domain-name", value="Login.Example.ORG.")
    later = make_indicator(observable_type="domain", value="login.example.org", fused_score=0.9,
                           modified=datetime(2024, 5, 1, 10, 10, tzinfo=timezone.utc))

    assert first["id"] == later["id"] == indicator_id("[domain-name:value = 'login.example.org']")


def test_indicator_accepts_hub_identity_id(make_indicator: MakeIndicator) -> None:
    assert make_indicator(hub_identity=hub_identity_id("hub-1")) == EXPECTED_INDICATOR


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"fused_score": 1.2}, "fused_score", "fused_score must be a number in [0, 1]; got 1.2"),
        ({"fused_score": float("nan")}, "fused_score", "fused_score must be a number in [0, 1]; got nan"),
        ({"fused_score": True}, "fused_score", "fused_score must be a number in [0, 1]; got True"),
        ({"corroborating_sites": 0}, "corroborating_sites", "corroborating_sites must be an integer >= 1; got 0"),
        ({"tlp": "clear"}, "tlp", "tlp must be one of white, green, amber, red (TLP 1.0 as in STIX 2.1); got 'clear'"),
        ({"revoked": "yes"}, "revoked", "revoked must be a bool; got 'yes'"),
        (
            {"hub_identity": "hub-1"},
            "hub_identity",
            "hub_identity must be an identity object or its identity-- id; got 'hub-1'",
        ),
        (
            {"modified": datetime(2024, 5, 1, 10, 4, tzinfo=timezone.utc)},
            "modified",
            "modified must not be before created (2024-05-01T10:05:00.000Z); got '2024-05-01T10:04:00.000Z'",
        ),
        (
            {"valid_until": datetime(2024, 5, 1, 10, 5, tzinfo=timezone.utc)},
            "valid_until",
            "valid_until must be after valid_from (2024-05-01T10:05:00Z); got '2024-05-01T10:05:00Z'",
        ),
    ],
)
def test_build_fused_indicator_rejects_argument(
    make_indicator: MakeIndicator, overrides: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(IndicatorInvalid) as excinfo:
        make_indicator(**overrides)

    assert excinfo.value.field == field
    assert str(excinfo.value) == message


def test_build_fused_indicator_rejects_strategy_name(make_indicator: MakeIndicator) -> None:
    with pytest.raises(IndicatorInvalid) as excinfo:
        make_indicator(strategy="Noisy OR")

    assert excinfo.value.field == "fusion details"
    assert excinfo.value.reason == (
        "strategy must be a strategy name of 1 to 64 lowercase letters, digits, '_' or '-'; got \"Noisy OR\""
    )


def test_build_fused_indicator_rejects_mistyped_value(make_indicator: MakeIndicator) -> None:
    with pytest.raises(PatternRejected) as excinfo:
        make_indicator(observable_type="ipv4-addr", value="2001:db8::1")

    assert excinfo.value.reason == "not an IPv4 address/CIDR"


def test_hub_identity_exact_document() -> None:
    assert hub_identity("hub-1") == {
        "type": "identity",
        "spec_version": "2.1",
        "id": "identity--adbb1d5f-7cdf-54fe-a810-88be0665ee88",
        "created_by_ref": "identity--adbb1d5f-7cdf-54fe-a810-88be0665ee88",
        "created": "2026-12-04T00:00:00.000Z",
        "modified": "2026-12-04T00:00:00.000Z",
        "name": "hub-1",
        "description": "fti fusion hub",
        "identity_class": "system",
    }


def test_extension_definitions_ids_types_and_parse(hub: dict[str, Any]) -> None:
    definitions = extension_definitions(hub["id"])

    assert [(d["id"], d["extension_types"], d["version"]) for d in definitions] == [
        (SUMMARY_EXTENSION_ID, ["new-sdo"], "2.0.0"),
        (FUSION_EXTENSION_ID, ["property-extension"], "1.0.0"),
    ]
    for definition in definitions:
        parsed = stix2.parse(definition)

        assert isinstance(parsed, stix2.v21.ExtensionDefinition)
        assert parsed.serialize() == json.dumps(definition)


def test_read_fused_indicator_fields(fused_indicator: dict[str, Any]) -> None:
    fused = read_fused_indicator(fused_indicator)

    assert (fused.kind, fused.value, fused.tlp, fused.confidence) == ("ipv4-addr", "203.0.113.5", "AMBER", 73)
    assert (fused.strategy, fused.fused_score, fused.corroborating_sites) == ("noisy-or", 0.734, 2)
    assert fused.modified == datetime(2024, 5, 1, 10, 5, 1, 250_000, tzinfo=timezone.utc)
    assert fused.round_start == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert fused.revoked is False


def test_read_fused_indicator_most_restrictive_tlp(fused_indicator: dict[str, Any]) -> None:
    fused_indicator["object_marking_refs"] = [stix2.TLP_GREEN.id, stix2.TLP_RED.id, stix2.TLP_AMBER.id]

    assert read_fused_indicator(fused_indicator).tlp == "RED"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"type": "malware"}, "the object is not an indicator"),
        ({"pattern_type": "sigma"}, "only indicators with a STIX pattern can be mapped"),
        ({"pattern": "[network-traffic:dst_port = 443]"},
         "pattern '[network-traffic:dst_port = 443]': must compare exactly one observable with '='"),
        ({"modified": "yesterday"},
         "modified must be a STIX timestamp like 2024-05-01T10:00:00.000Z; got 'yesterday'"),
    ],
)
def test_read_fused_indicator_unsupported_raises(
    fused_indicator: dict[str, Any], changes: dict[str, Any], reason: str
) -> None:
    fused_indicator.update(changes)

    with pytest.raises(UnsupportedIndicator) as excinfo:
        read_fused_indicator(fused_indicator)

    assert excinfo.value.indicator_id == EXPECTED_INDICATOR["id"]
    assert excinfo.value.reason == reason


def test_second_lifetime_gets_new_id_and_validates(make_indicator: MakeIndicator) -> None:
    """A returning observable after a revocation is a new indicator, not a new version."""
    first = make_indicator()
    second = make_indicator(lifetime=1)

    assert second["id"] == indicator_id(first["pattern"], 1)
    assert second["id"] != first["id"]
    assert second["extensions"][FUSION_EXTENSION_ID]["lifetime"] == 1
    assert "lifetime" not in first["extensions"][FUSION_EXTENSION_ID]
    assert validate_stix([second]) == []


def test_lifetime_id_mismatch_is_reported(make_indicator: MakeIndicator) -> None:
    second = make_indicator(lifetime=2)
    second["extensions"][FUSION_EXTENSION_ID]["lifetime"] = 1

    errors = validate_stix([second])

    assert any("derived from the pattern and lifetime 1" in e for e in errors)


def test_negative_lifetime_raises() -> None:
    with pytest.raises(ValueError, match="lifetime must be >= 0; got -1"):
        indicator_id("[ipv4-addr:value = '203.0.113.5']", -1)
