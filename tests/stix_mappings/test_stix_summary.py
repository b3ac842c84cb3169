"""Round summary: building, schema and semantic checks, parsing, stix2 round trip, signatures."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import stix2

from privacy.signing import generate_signing_key, sign_object, verify_object
from stix_mappings.errors import SummaryInvalid, TimestampInvalid
from stix_mappings.ids import SUMMARY_EXTENSION_ID, SUMMARY_TYPE
from stix_mappings.schema_validation import load_schema
from stix_mappings.summary import (
    Detector,
    Evidence,
    FamilySummary,
    ScoreHistogram,
    build_summary,
    parse_summary,
    validate_summary,
)

EXPECTED_SUMMARY: dict[str, Any] = {
    "type": "x-fti-round-summary",
    "spec_version": "2.1",
    "id": "x-fti-round-summary--2333512d-b4fc-5229-b382-81010d7df142",
    "created_by_ref": "identity--fc3116d0-c734-5b04-b971-a98d250a6c71",
    "created": "2024-05-01T10:05:00.000Z",
    "modified": "2024-05-01T10:05:00.000Z",
    "extensions": {"extension-definition--a45ba354-d240-4548-8651-a7578acf97da": {"extension_type": "new-sdo"}},
    "site": "site-a",
    "round_start": "2024-05-01T10:00:00.000Z",
    "round_end": "2024-05-01T10:05:00.000Z",
    "families": [
        {
            "family": "network",
            "detector": {"name": "iforest", "version": "1.4.2"},
            "feature_schema_version": "1",
            "score_histogram": {
                "bin_edges": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                "noised_counts": [40, 22, 13, 9, 5, 2, 0, -1, 3, 4],
            },
            "noised_window_count": 97,
        },
    ],
    "evidence": [
        {
            "family": "network",
            "observable_type": "domain-name",
            "value": "login.example.org",
            "noised_entity_count": 5,
            "noised_mean_score": 0.75,
            "first_seen": "2024-05-01T10:00:00.000Z",
            "last_seen": "2024-05-01T10:05:00.000Z",
        },
        {
            "family": "network",
            "observable_type": "ipv4-addr",
            "value": "203.0.113.5",
            "noised_entity_count": 6,
            "noised_mean_score": 0.91,
            "first_seen": "2024-05-01T10:01:00.000Z",
            "last_seen": "2024-05-01T10:04:00.000Z",
        },
    ],
    "privacy": {
        "unit": "entity",
        "mechanism": "discrete-laplace",
        "epsilon": 1.0,
        "delta": 1e-06,
        "partition_threshold": 5,
        "max_observables_per_entity": 8,
        "max_windows_per_entity": 12,
        "epsilon_spent_in_period": 3.0,
        "epsilon_budget": 10.0,
        "period_days": 30,
    },
}


def test_build_summary_exact_document(valid_summary: dict[str, Any]) -> None:
    assert valid_summary == EXPECTED_SUMMARY


def test_build_summary_evidence_order_does_not_matter(summary_fields: dict[str, Any]) -> None:
    reordered = dict(summary_fields, evidence=list(reversed(summary_fields["evidence"])))

    assert json.dumps(build_summary(**reordered)) == json.dumps(build_summary(**summary_fields))


def test_build_summary_accepts_dataclasses(summary_fields: dict[str, Any]) -> None:
    start = summary_fields["round_start"]
    fields = dict(
        summary_fields,
        families=[FamilySummary("network", Detector(name="iforest", version="1.4.2"), "1",
                                ScoreHistogram(tuple(i / 10 for i in range(11)), (40, 22, 13, 9, 5, 2, 0, -1, 3, 4)),
                                97)],
        evidence=[
            Evidence("network", "ipv4-addr", "203.0.113.5", 6, 0.91, start + timedelta(minutes=1),
                     start + timedelta(minutes=4)),
            Evidence("network", "domain-name", "login.example.org", 5, 0.75, start, start + timedelta(minutes=5)),
        ],
    )

    assert build_summary(**fields) == EXPECTED_SUMMARY


def test_build_summary_created_defaults_to_round_end(summary_fields: dict[str, Any]) -> None:
    created = datetime(2024, 5, 1, 10, 6, 30, 123_456, tzinfo=timezone.utc)

    summary = build_summary(**summary_fields, created=created)

    assert (summary["created"], summary["modified"]) == ("2024-05-01T10:06:30.123Z", "2024-05-01T10:06:30.123Z")


def test_build_summary_invalid_fields_raise_with_every_error(summary_fields: dict[str, Any]) -> None:
    summary_fields["privacy"]["epsilon"] = -1
    summary_fields["round_end"] = summary_fields["round_start"] - timedelta(minutes=5)

    with pytest.raises(SummaryInvalid) as excinfo:
        build_summary(**summary_fields)

    assert excinfo.value.object_id == "x-fti-round-summary--2333512d-b4fc-5229-b382-81010d7df142"
    assert excinfo.value.errors == (
        "privacy.epsilon must be > 0; got -1.0",
        "round_end must be after round_start; got round_start 2024-05-01T10:00:00.000Z, "
        "round_end 2024-05-01T09:55:00.000Z",
    )


def test_build_summary_naive_round_start_raises(summary_fields: dict[str, Any]) -> None:
    summary_fields["round_start"] = datetime(2024, 5, 1, 10, 0)

    with pytest.raises(TimestampInvalid) as excinfo:
        build_summary(**summary_fields)

    assert excinfo.value.field == "round_start"


def test_validate_summary_valid_has_no_errors(valid_summary: dict[str, Any]) -> None:
    assert validate_summary(valid_summary) == []


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(summary: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = summary
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda summary: summary.pop(name) and None


def _duplicate_first_evidence(summary: dict[str, Any]) -> None:
    summary["evidence"].append(copy.deepcopy(summary["evidence"][0]))


def _duplicate_first_family(summary: dict[str, Any]) -> None:
    summary["families"].append(copy.deepcopy(summary["families"][0]))


def _reverse_bin_edges(summary: dict[str, Any]) -> None:
    summary["families"][0]["score_histogram"]["bin_edges"].reverse()


def _drop_last_count(summary: dict[str, Any]) -> None:
    summary["families"][0]["score_histogram"]["noised_counts"].pop()


INVALID_CASES: list[tuple[str, list[Callable[[dict[str, Any]], None]], list[str]]] = [
    (
        "negative epsilon and inverted round",
        [_set("privacy.epsilon", -1), _set("round_end", "2024-05-01T09:55:00.000Z")],
        [
            "privacy.epsilon must be > 0; got -1",
            "round_end must be after round_start; got round_start 2024-05-01T10:00:00.000Z, "
            "round_end 2024-05-01T09:55:00.000Z",
        ],
    ),
    ("missing spec_version", [_drop("spec_version")], ["spec_version required (STIX 2.1)"]),
    ("missing privacy", [_drop("privacy")], ["privacy is required"]),
    ("custom property", [_set("x_extra", 1)], ["x_extra is not an allowed property"]),
    ("count written as float", [_set("families.0.noised_window_count", 97.0)],
     ["families[0].noised_window_count must be an integer; got 97.0"]),
    ("boolean count", [_set("families.0.noised_window_count", True)],
     ["families[0].noised_window_count must be an integer; got true"]),
    ("NaN epsilon", [_set("privacy.epsilon", float("nan"))], ["privacy.epsilon must be a finite number; got nan"]),
    ("delta of one", [_set("privacy.delta", 1)], ["privacy.delta must be < 1; got 1"]),
    (
        "spent above budget",
        [_set("privacy.epsilon_spent_in_period", 12.0)],
        ["privacy.epsilon_spent_in_period must be <= privacy.epsilon_budget (10.0); got 12.0"],
    ),
    (
        "unknown detector",
        [_set("families.0.detector.name", "lof")],
        ['families[0].detector.name must be one of "iforest", "ecod", "hbos"; got "lof"'],
    ),
    (
        "timestamp without milliseconds",
        [_set("created", "2024-05-01T10:05:00Z")],
        ['created must be a UTC timestamp with milliseconds like 2024-05-01T10:00:00.000Z; got "2024-05-01T10:05:00Z"'],
    ),
    (
        "impossible date",
        [_set("round_end", "2024-02-30T10:00:00.000Z")],
        ['round_end is not a valid date and time; got "2024-02-30T10:00:00.000Z"'],
    ),
    (
        "modified before created",
        [_set("modified", "2024-05-01T10:04:00.000Z")],
        ["modified must not be before created; got created 2024-05-01T10:05:00.000Z, modified 2024-05-01T10:04:00.000Z"],
    ),
    (
        "missing extension",
        [_set("extensions", {})],
        [f"extensions.{SUMMARY_EXTENSION_ID} is required"],
    ),
    (
        "site does not match id",
        [_set("site", "site-b")],
        [
            "id must be x-fti-round-summary--53002e63-31b9-56c3-9f84-304b72d9aae8 (derived from site and "
            "round_start); got x-fti-round-summary--2333512d-b4fc-5229-b382-81010d7df142",
            "created_by_ref must be identity--743edf94-1da5-5b77-9145-9e6c45a39b7c (the identity of site "
            "'site-b'); got identity--fc3116d0-c734-5b04-b971-a98d250a6c71",
        ],
    ),
    (
        "bin edges decreasing",
        [_reverse_bin_edges],
        [
            "families[0].score_histogram.bin_edges must increase strictly from 0.0 to 1.0; "
            "got [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]"
        ],
    ),
    ("nine counts", [_drop_last_count], ["families[0].score_histogram.noised_counts must have exactly 10 items; got 9"]),
    (
        "internal address",
        [_set("evidence.1.value", "10.1.2.3")],
        ["evidence[1].value is an internal address (10.0.0.0/8); internal observables must never leave the site"],
    ),
    (
        "internal IPv6 address",
        [_set("evidence.1.observable_type", "ipv6-addr"), _set("evidence.1.value", "fe80::1")],
        ["evidence[1].value is an internal address (fe80::/10); internal observables must never leave the site"],
    ),
    (
        "multicast address",
        [_set("evidence.1.value", "239.1.2.3")],
        ["evidence[1].value is an internal address (224.0.0.0/4); internal observables must never leave the site"],
    ),
    (
        "broadcast address",
        [_set("evidence.1.value", "255.255.255.255")],
        ["evidence[1].value is an internal address (240.0.0.0/4); internal observables must never leave the site"],
    ),
    (
        "IPv6 multicast address",
        [_set("evidence.1.observable_type", "ipv6-addr"), _set("evidence.1.value", "ff02::1")],
        ["evidence[1].value is an internal address (ff00::/8); internal observables must never leave the site"],
    ),
    (
        "private address in 6to4",
        [_set("evidence.1.observable_type", "ipv6-addr"), _set("evidence.1.value", "2002:a01:203::1")],
        ["evidence[1].value is an internal address (10.0.0.0/8); internal observables must never leave the site"],
    ),
    (
        "private address behind NAT64",
        [_set("evidence.1.observable_type", "ipv6-addr"), _set("evidence.1.value", "64:ff9b::c0a8:109")],
        ["evidence[1].value is an internal address (192.168.0.0/16); internal observables must never leave the site"],
    ),
    (
        "IPv4-translated private address",
        [_set("evidence.1.observable_type", "ipv6-addr"), _set("evidence.1.value", "::ffff:0:a00:1")],
        ["evidence[1].value is an internal address (10.0.0.0/8); internal observables must never leave the site"],
    ),
    (
        "local-use NAT64 address",
        [_set("evidence.1.observable_type", "ipv6-addr"), _set("evidence.1.value", "64:ff9b:1::a00:1")],
        ["evidence[1].value is an internal address (64:ff9b:1::/48); internal observables must never leave the site"],
    ),
    (
        "IPv6 benchmarking address",
        [_set("evidence.1.observable_type", "ipv6-addr"), _set("evidence.1.value", "2001:2::1")],
        ["evidence[1].value is an internal address (2001:2::/48); internal observables must never leave the site"],
    ),
    (
        "URL whose backslash hides an internal host",
        [_set("evidence.0.observable_type", "url"), _set("evidence.0.value", "http://10.0.0.1\\@example.com/")],
        ["evidence[0].value is an internal address (10.0.0.0/8); internal observables must never leave the site"],
    ),
    (
        "IPv4-mapped private address",
        [_set("evidence.1.observable_type", "ipv6-addr"), _set("evidence.1.value", "::ffff:172.16.0.9")],
        ["evidence[1].value is an internal address (172.16.0.0/12); internal observables must never leave the site"],
    ),
    (
        "internal name",
        [_set("evidence.0.value", "printer.corp.internal")],
        ["evidence[0].value is an internal name; internal observables must never leave the site"],
    ),
    (
        "URL given as IPv4",
        [_set("evidence.1.value", "http://198.51.100.7/login")],
        ['evidence[1].value must be a valid ipv4-addr: not an IPv4 address; got "http://198.51.100.7/login"'],
    ),
    (
        "CIDR evidence",
        [_set("evidence.1.value", "198.51.100.0/24")],
        ['evidence[1].value must be a valid ipv4-addr: not an IPv4 address; got "198.51.100.0/24"'],
    ),
    (
        "value not canonical",
        [_set("evidence.0.value", "Login.Example.org")],
        ['evidence[0].value must be in canonical form "login.example.org"; got "Login.Example.org"'],
    ),
    (
        "duplicate evidence",
        [_duplicate_first_evidence],
        ["evidence[2] repeats network domain-name login.example.org from evidence[0]"],
    ),
    (
        "URL on an internal host",
        [_set("evidence.0.observable_type", "url"), _set("evidence.0.value", "http://intranet.corp.internal/a")],
        ["evidence[0].value is an internal name; internal observables must never leave the site"],
    ),
    (
        "URL on an internal address",
        [_set("evidence.0.observable_type", "url"), _set("evidence.0.value", "http://192.168.1.9/a")],
        ["evidence[0].value is an internal address (192.168.0.0/16); internal observables must never leave the site"],
    ),
    (
        "JA3 of the wrong length",
        [_set("evidence.0.observable_type", "ja3"), _set("evidence.0.value", "6734f374")],
        ['evidence[0].value must be a valid ja3: a JA3 fingerprint must be 32 hex digits; got 8 characters; '
         'got "6734f374"'],
    ),
    (
        "evidence of an unlisted family",
        [_set("evidence.0.family", "process")],
        ["evidence[0].family 'process' has no section in families; list it there or drop the item"],
    ),
    (
        "unknown family",
        [_set("evidence.0.family", "email")],
        ['evidence[0].family must be one of "network", "authentication", "process"; got "email"'],
    ),
    (
        "family listed twice",
        [_duplicate_first_family],
        ["families[1] repeats family 'network' from families[0]"],
    ),
    (
        "count below partition threshold",
        [_set("evidence.1.noised_entity_count", 3)],
        ["evidence[1].noised_entity_count must be >= privacy.partition_threshold (5); got 3"],
    ),
    (
        "last_seen before first_seen",
        [_set("evidence.1.last_seen", "2024-05-01T09:00:00.000Z")],
        [
            "evidence[1].last_seen must not be before first_seen; "
            "got first_seen 2024-05-01T10:01:00.000Z, last_seen 2024-05-01T09:00:00.000Z"
        ],
    ),
    (
        "mean score above one",
        [_set("evidence.0.noised_mean_score", 1.5)],
        ["evidence[0].noised_mean_score must be <= 1; got 1.5"],
    ),
    (
        "malformed signature",
        [_set("signature", {"alg": "RSA", "key_id": "xyz", "value": "abc"})],
        [
            'signature.alg must be "Ed25519"; got "RSA"',
            'signature.key_id must be 16 lowercase hex digits (the start of SHA-256 of the public key); got "xyz"',
            'signature.value must be a 64-byte Ed25519 signature in standard base64 (88 characters); got "abc"',
        ],
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [(changes, expected) for _, changes, expected in INVALID_CASES],
    ids=[name for name, _, _ in INVALID_CASES],
)
def test_validate_summary_reports_each_error(
    valid_summary: dict[str, Any], changes: list[Callable[[dict[str, Any]], None]], expected: list[str]
) -> None:
    summary = copy.deepcopy(valid_summary)
    for change in changes:
        change(summary)

    assert validate_summary(summary) == expected


def test_validate_summary_not_an_object() -> None:
    assert validate_summary([1, 2]) == ["a round summary must be a JSON object; got [1, 2]"]  # type: ignore[arg-type]


def test_parse_summary_typed_fields(valid_summary: dict[str, Any]) -> None:
    summary = parse_summary(valid_summary)

    assert summary.id == EXPECTED_SUMMARY["id"]
    assert summary.round_start == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert summary.families[0].detector == Detector(name="iforest", version="1.4.2")
    assert summary.families[0].score_histogram.noised_counts == (40, 22, 13, 9, 5, 2, 0, -1, 3, 4)
    assert summary.evidence[1] == Evidence(
        family="network",
        observable_type="ipv4-addr",
        value="203.0.113.5",
        noised_entity_count=6,
        noised_mean_score=0.91,
        first_seen=datetime(2024, 5, 1, 10, 1, tzinfo=timezone.utc),
        last_seen=datetime(2024, 5, 1, 10, 4, tzinfo=timezone.utc),
    )
    assert summary.privacy.epsilon == 1.0
    assert summary.privacy.period_days == 30.0
    assert summary.signature is None


def test_parse_summary_invalid_raises(valid_summary: dict[str, Any]) -> None:
    valid_summary["privacy"]["epsilon"] = -1

    with pytest.raises(SummaryInvalid) as excinfo:
        parse_summary(valid_summary)

    assert excinfo.value.object_id == valid_summary["id"]
    assert excinfo.value.errors == ("privacy.epsilon must be > 0; got -1",)


def test_summary_round_trips_through_stix2_parse(valid_summary: dict[str, Any]) -> None:
    text = json.dumps(valid_summary)

    parsed = stix2.parse(text, allow_custom=True)

    assert parsed == valid_summary
    assert json.dumps(parsed) == text


def test_summary_round_trips_in_stix2_bundle(valid_summary: dict[str, Any]) -> None:
    bundle = {"type": "bundle", "id": "bundle--5b8e2f61-3c4d-4a5b-9c6d-7e8f9a0b1c2d", "objects": [valid_summary]}

    parsed = stix2.parse(json.dumps(bundle), allow_custom=True)

    assert json.loads(parsed.serialize())["objects"] == [valid_summary]


def test_signed_summary_validates_and_verifies_after_round_trip(valid_summary: dict[str, Any]) -> None:
    key = generate_signing_key()
    signed = sign_object(valid_summary, key)

    parsed = stix2.parse(json.dumps(signed), allow_custom=True)

    assert validate_summary(signed) == []
    assert parse_summary(signed).signature is not None
    verify_object(dict(parsed), key.public_key_b64)


def test_schema_file_names_the_shared_constants() -> None:
    schema = load_schema("round-summary.json")

    assert schema["properties"]["type"] == {"const": SUMMARY_TYPE}
    assert schema["properties"]["extensions"]["required"] == [SUMMARY_EXTENSION_ID]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.extend(_paths(item, (*prefix, index)))
    return paths


@pytest.mark.parametrize("replacement", [None, -1, 1.5, "x", [], {}, True, [{}]], ids=repr)
def test_validate_summary_any_wrong_type_reported_not_raised(
    valid_summary: dict[str, Any], replacement: object
) -> None:
    """The hub's intake must get a list of errors for any malformed summary, never an exception."""
    for path in _paths(valid_summary):
        summary = copy.deepcopy(valid_summary)
        target: Any = summary
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = copy.deepcopy(replacement)

        errors = validate_summary(summary)

        assert isinstance(errors, list)
        assert all(isinstance(error, str) for error in errors)


def test_build_summary_families_and_fingerprints(summary_fields: dict[str, Any]) -> None:
    """Sections follow FAMILIES order and evidence sorts by family. Fingerprints are lower-cased."""
    network = summary_fields["families"][0]
    process = dict(network, family="process", feature_schema_version="process-1")
    start, end = summary_fields["round_start"], summary_fields["round_end"]
    ja3 = {"family": "network", "observable_type": "ja3", "value": "6734F37431670B3AB4292B8F60F29984",
           "noised_entity_count": 5, "noised_mean_score": 0.5, "first_seen": start, "last_seen": end}
    sha256 = {"family": "process", "observable_type": "sha256", "value": "AB" * 32,
              "noised_entity_count": 5, "noised_mean_score": 0.5, "first_seen": start, "last_seen": end}
    fields = dict(summary_fields, families=[process, network], evidence=[sha256, *summary_fields["evidence"], ja3])

    summary = build_summary(**fields)

    assert [f["family"] for f in summary["families"]] == ["network", "process"]
    assert [(e["family"], e["observable_type"]) for e in summary["evidence"]] == [
        ("network", "domain-name"), ("network", "ipv4-addr"), ("network", "ja3"), ("process", "sha256")]
    assert summary["evidence"][2]["value"] == "6734f37431670b3ab4292b8f60f29984"
    assert summary["evidence"][3]["value"] == "ab" * 32
