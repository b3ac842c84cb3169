"""Hub intake checks (field case 012) and pre-publication validation."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from stix_mappings.ids import FUSION_EXTENSION_ID
from stix_mappings.indicator import build_fused_indicator, extension_definitions, site_identity
from stix_mappings.validation import UNKNOWN_TYPE_MESSAGE, validate_object, validate_stix

UNKNOWN_EXTENSION_ID = "extension-definition--00000000-0000-4000-8000-000000000000"

# Case 012, one entry per envelope object, in order. Objects 3 and 4 are
# x-anomaly-summary objects, a placeholder type from the bug report whose
# extension-definition (c0ffee00-...) this hub has not registered. So both are
# rejected as unknown, the valid one included. The tests below cover our own
# summary type and expect the case's specific messages for it.
CASE_012_EXPECTED = [
    ("identity", []),
    ("extension-definition", []),
    ("x-anomaly-summary", [UNKNOWN_TYPE_MESSAGE]),
    ("x-anomaly-summary", [UNKNOWN_TYPE_MESSAGE]),
    ("x-unknown-thing", [UNKNOWN_TYPE_MESSAGE]),
    ("indicator", ["spec_version required (STIX 2.1)"]),
]


def _case_012_objects(cases_dir: Path) -> list[dict[str, Any]]:
    text = (cases_dir / "012-stix-custom-summary-objects.input.json").read_text(encoding="utf-8")
    objects: list[dict[str, Any]] = json.loads(text)["objects"]
    return objects


@pytest.mark.parametrize("position", range(len(CASE_012_EXPECTED)))
def test_case_012_object(cases_dir: Path, position: int) -> None:
    obj = _case_012_objects(cases_dir)[position]
    object_type, expected = CASE_012_EXPECTED[position]

    assert obj["type"] == object_type
    assert validate_object(obj) == expected


def test_case_012_one_bad_object_leaves_others_untouched(cases_dir: Path) -> None:
    objects = _case_012_objects(cases_dir)
    before = copy.deepcopy(objects)

    results = [validate_object(obj) for obj in objects]

    assert [not errors for errors in results] == [True, True, False, False, False, False]
    assert objects == before


def test_own_summary_accepted(valid_summary: dict[str, Any]) -> None:
    assert validate_object(valid_summary) == []


def test_own_invalid_summary_gets_specific_messages(valid_summary: dict[str, Any]) -> None:
    """The case's invalid summary (negative epsilon, window ending before it starts) in our type."""
    valid_summary["privacy"]["epsilon"] = -1
    valid_summary["round_end"] = "2024-05-01T09:55:00.000Z"

    assert validate_object(valid_summary) == [
        "privacy.epsilon must be > 0; got -1",
        "round_end must be after round_start; got round_start 2024-05-01T10:00:00.000Z, "
        "round_end 2024-05-01T09:55:00.000Z",
    ]


def test_own_summary_without_spec_version(valid_summary: dict[str, Any]) -> None:
    del valid_summary["spec_version"]

    assert validate_object(valid_summary) == ["spec_version required (STIX 2.1)"]


def test_own_reference_objects_accepted(hub: dict[str, Any], fused_indicator: dict[str, Any]) -> None:
    objects = [hub, site_identity("site-a"), *extension_definitions(hub["id"]), fused_indicator]

    assert [validate_object(obj) for obj in objects] == [[], [], [], [], []]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"spec_version": "2.0"}, ['spec_version must be "2.1"; got "2.0"']),
        ({"x_foo": 1}, ["Unexpected properties for Indicator: (x_foo)."]),
        (
            {"confidence": 500},
            ["indicator--38c7720b-5013-55e7-bbbb-91089342cf70: confidence: 500 is greater than the maximum of 100"],
        ),
    ],
)
def test_standard_object_errors(fused_indicator: dict[str, Any], change: dict[str, Any], expected: list[str]) -> None:
    fused_indicator.update(change)

    assert validate_object(fused_indicator) == expected


def test_unregistered_property_extension_rejected(fused_indicator: dict[str, Any]) -> None:
    fused_indicator["extensions"][UNKNOWN_EXTENSION_ID] = {"extension_type": "property-extension", "rank": 5}

    assert validate_object(fused_indicator) == [f"extensions.{UNKNOWN_EXTENSION_ID}: {UNKNOWN_TYPE_MESSAGE}"]


def test_custom_type_without_extension_is_unknown() -> None:
    obj = {"type": "x-foo", "spec_version": "2.1", "id": "x-foo--8eb15c94-6f70-4d8e-8f90-ab1c2d3e4f50"}

    assert validate_object(obj) == [UNKNOWN_TYPE_MESSAGE]


def test_observable_without_spec_version_accepted() -> None:
    """STIX 2.1 makes spec_version optional on cyber-observable objects."""
    obj = {"type": "ipv4-addr", "id": "ipv4-addr--8eb15c94-6f70-5d8e-8f90-ab1c2d3e4f50", "value": "203.0.113.5"}

    assert validate_object(obj) == []


def test_non_object_rejected() -> None:
    assert validate_object("abc") == ["an object must be a JSON object with a string 'type'; got \"abc\""]


def test_validate_stix_empty_list() -> None:
    assert validate_stix([]) == []


def test_validate_stix_summary_with_definitions(valid_summary: dict[str, Any], hub: dict[str, Any]) -> None:
    objects = [site_identity("site-a"), hub, *extension_definitions(hub["id"]), valid_summary]

    assert validate_stix(objects) == []


def test_validate_stix_reports_summary_schema_errors(valid_summary: dict[str, Any]) -> None:
    valid_summary["privacy"]["epsilon"] = 0

    assert validate_stix([valid_summary]) == [f"{valid_summary['id']}: privacy.epsilon must be > 0; got 0"]


def test_validate_stix_does_not_change_objects(fused_indicator: dict[str, Any]) -> None:
    before = copy.deepcopy(fused_indicator)

    validate_stix([fused_indicator])

    assert fused_indicator == before


INDICATOR_ID = "indicator--38c7720b-5013-55e7-bbbb-91089342cf70"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (
            "pattern",
            "[ipv4-addr:value = 'http://198.51.100.7/login']",
            [f'{INDICATOR_ID}: pattern value "http://198.51.100.7/login" is not a valid ipv4-addr: '
             "not an IPv4 address/CIDR"],
        ),
        (
            "pattern",
            "[ipv4-addr:value = '2001:db8::1']",
            [f'{INDICATOR_ID}: pattern value "2001:db8::1" is not a valid ipv4-addr: not an IPv4 address/CIDR'],
        ),
        (
            "pattern",
            "[ipv4-addr:value='203.0.113.5']",
            [
                f"{INDICATOR_ID}: pattern must be written \"[ipv4-addr:value = '203.0.113.5']\"; "
                "got \"[ipv4-addr:value='203.0.113.5']\"",
                f"{INDICATOR_ID}: id must be indicator--59194cee-d354-5931-b911-3f54b90ccd1f (derived from the pattern)",
            ],
        ),
        (
            "id",
            "indicator--8eb15c94-6f70-4d8e-8f90-ab1c2d3e4f50",
            ["indicator--8eb15c94-6f70-4d8e-8f90-ab1c2d3e4f50: id must be "
             f"{INDICATOR_ID} (derived from the pattern)"],
        ),
        ("confidence", 500, [f"{INDICATOR_ID}: confidence: 500 is greater than the maximum of 100"]),
    ],
)
def test_validate_stix_rejects_bad_indicator(
    fused_indicator: dict[str, Any], field: str, value: object, expected: list[str]
) -> None:
    fused_indicator[field] = value

    assert validate_stix([fused_indicator]) == expected


def test_validate_stix_rejects_bad_fusion_details(fused_indicator: dict[str, Any]) -> None:
    fused_indicator["extensions"][FUSION_EXTENSION_ID]["fused_score"] = 2

    assert validate_stix([fused_indicator]) == [
        f"{INDICATOR_ID}: extensions.{FUSION_EXTENSION_ID}.fused_score must be <= 1; got 2"
    ]


def test_validate_stix_short_md5_in_foreign_indicator(fused_indicator: dict[str, Any]) -> None:
    """Both the pattern validator and the per-type check report a 31-digit MD5."""
    del fused_indicator["extensions"]
    fused_indicator["pattern"] = "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427']"

    assert validate_stix([fused_indicator]) == [
        f"{INDICATOR_ID}: Pattern failed to validate: FAIL: 'd41d8cd98f00b204e9800998ecf8427' is not a valid MD5 hash.",
        f'{INDICATOR_ID}: pattern value "d41d8cd98f00b204e9800998ecf8427" is not a valid md5: '
        "an MD5 must be 32 hex digits; got 31 characters",
    ]


@pytest.mark.parametrize(
    ("kind", "value"),
    [("ja3", "6734f37431670b3ab4292b8f60f29984"), ("ja3s", "e7d705a3286e19ea42f587b344ee6865"),
     ("x509-sha256", "b2dafbcdbc75210672f137f27ce882ccb799887631655d4f11191d5a678e44fe"),
     ("x509-sha1", "0a6b201a7bff643cc5dd6631e5940e858ee07d25"), ("sha256", "5f" * 32)],
)
def test_validate_stix_fingerprint_indicators_pass(hub: dict[str, Any], kind: str, value: str) -> None:
    """Indicators on the evidence kinds that Zeek's ssl and files logs add pass the OASIS validator."""
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    indicator = build_fused_indicator(
        observable_type=kind, value=value, fused_score=0.9, corroborating_sites=2, strategy="noisy-or",
        round_start=start, valid_from=start, valid_until=start + timedelta(days=1), created=start, modified=start,
        hub_identity=hub)

    assert validate_stix([hub, *extension_definitions(hub["id"]), indicator]) == []
