"""The shipped JSON schemas and the way their errors are worded."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stix2
from jsonschema import Draft202012Validator

from stix_mappings.indicator import hub_identity, site_identity
from stix_mappings.schema_validation import (
    all_schema_names,
    fusion_details_errors,
    join_path,
    load_schema,
    show_value,
)

VALID_DETAILS: dict[str, Any] = {
    "extension_type": "property-extension",
    "strategy": "noisy-or",
    "fused_score": 0.5,
    "corroborating_sites": 1,
    "round_start": "2024-05-01T10:00:00.000Z",
}


@pytest.mark.parametrize("name", all_schema_names())
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)

    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_fusion_details_valid() -> None:
    assert fusion_details_errors(VALID_DETAILS) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"corroborating_sites": 2.0}, ["corroborating_sites must be an integer; got 2.0"]),
        ({"corroborating_sites": 0}, ["corroborating_sites must be >= 1; got 0"]),
        ({"fused_score": -0.1}, ["fused_score must be >= 0; got -0.1"]),
        ({"extension_type": "new-sdo"}, ['extension_type must be "property-extension"; got "new-sdo"']),
        ({"rank": 5}, ["rank is not an allowed property"]),
        ({"strategy": ""}, ['strategy must be a strategy name of 1 to 64 lowercase letters, digits, \'_\' or \'-\'; got ""']),
    ],
)
def test_fusion_details_errors_worded(change: dict[str, Any], expected: list[str]) -> None:
    assert fusion_details_errors({**VALID_DETAILS, **change}) == expected


def test_fusion_details_missing_properties_listed_one_each() -> None:
    assert fusion_details_errors({"extension_type": "property-extension"}, prefix="ext") == [
        "ext.strategy is required",
        "ext.fused_score is required",
        "ext.corroborating_sites is required",
        "ext.round_start is required",
    ]


def test_join_path_forms() -> None:
    assert join_path(["evidence", 0, "value"]) == "evidence[0].value"
    assert join_path(["a"], "x.y") == "x.y.a"
    assert join_path([]) == ""


def test_show_value_shortens_long_values() -> None:
    text = show_value("x" * 200)

    assert len(text) == 80
    assert text.endswith("...")


@pytest.mark.parametrize("identity", [hub_identity("hub-1"), site_identity("site-a")])
def test_identities_round_trip_through_stix2(identity: dict[str, Any]) -> None:
    parsed = stix2.parse(identity)

    assert json.loads(parsed.serialize()) == identity
