"""Observable value to STIX pattern, including field case 013 (patterns that parse but are wrong)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stix2patterns.validator import run_validator

from stix_mappings.errors import PatternRejected
from stix_mappings.patterns import (
    OBSERVABLE_KINDS,
    build_pattern,
    escape_string_literal,
    observable_type_of,
    pattern_observable,
    unescape_string_literal,
)

# Case 013, one row per candidate: the pattern expected, or the refusal reason.
CASE_013_EXPECTED: dict[int, tuple[str, str]] = {
    1: ("pattern", "[ipv4-addr:value = '203.0.113.5']"),
    2: ("pattern", "[ipv4-addr:value = '198.51.100.0/24']"),
    3: ("refused", "not an IPv4 address/CIDR"),
    4: ("refused", "not an IPv4 address/CIDR"),
    5: ("pattern", "[file:name = 'o\\'brien.exe']"),
    6: (
        "pattern",
        "[file:name = 'x.ps1' AND file:parent_directory_ref.path = "
        "'C:\\\\Users\\\\alice\\\\AppData\\\\Local\\\\Temp']",
    ),
    7: ("refused", "an MD5 must be 32 hex digits; got 31 characters"),
    8: ("pattern", "[domain-name:value = 'login.example.org']"),
}


def _case_013_candidates(cases_dir: Path) -> dict[int, dict[str, Any]]:
    data = json.loads((cases_dir / "013-stix-pattern-semantic-values.input.json").read_text(encoding="utf-8"))
    return {candidate["n"]: candidate for candidate in data["candidates"]}


def test_case_013_input_has_every_row(cases_dir: Path) -> None:
    assert sorted(_case_013_candidates(cases_dir)) == sorted(CASE_013_EXPECTED)


@pytest.mark.parametrize("row", sorted(CASE_013_EXPECTED))
def test_case_013_row(cases_dir: Path, row: int) -> None:
    candidate = _case_013_candidates(cases_dir)[row]
    outcome, expected = CASE_013_EXPECTED[row]

    if outcome == "pattern":
        pattern = build_pattern(candidate["observed_as"], candidate["value"])

        assert pattern == expected
        assert run_validator(pattern, "2.1") == []
    else:
        with pytest.raises(PatternRejected) as excinfo:
            build_pattern(candidate["observed_as"], candidate["value"])

        assert excinfo.value.reason == expected
        assert excinfo.value.value == candidate["value"]
        assert excinfo.value.kind == candidate["observed_as"]


def test_case_013_row_6_literal_doubles_each_backslash(cases_dir: Path) -> None:
    value = _case_013_candidates(cases_dir)[6]["value"]

    pattern = build_pattern("file_path", value)

    assert value.count("\\") == 6
    assert pattern.count("\\\\") == 5


def test_case_013_patterns_are_deterministic(cases_dir: Path) -> None:
    for row, candidate in _case_013_candidates(cases_dir).items():
        if CASE_013_EXPECTED[row][0] != "pattern":
            continue

        first = build_pattern(candidate["observed_as"], candidate["value"])
        second = build_pattern(candidate["observed_as"], candidate["value"])

        assert first == second


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("ipv4-addr", "203.0.113.5/32", "[ipv4-addr:value = '203.0.113.5']"),
        ("ipv6-addr", "2001:DB8:0:0::1", "[ipv6-addr:value = '2001:db8::1']"),
        ("ipv6", "::ffff:198.51.100.7", "[ipv6-addr:value = '::ffff:198.51.100.7']"),
        ("domain-name", "Login.Example.ORG.", "[domain-name:value = 'login.example.org']"),
        ("url", "https://a.example/q?x='1'", "[url:value = 'https://a.example/q?x=\\'1\\'']"),
        ("sha256", "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
         "[file:hashes.'SHA-256' = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855']"),
        ("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709",
         "[file:hashes.'SHA-1' = 'da39a3ee5e6b4b0d3255bfef95601890afd80709']"),
        ("file_path", "/tmp/run.sh", "[file:name = 'run.sh' AND file:parent_directory_ref.path = '/tmp']"),
        ("file_path", "/run.sh", "[file:name = 'run.sh' AND file:parent_directory_ref.path = '/']"),
        ("file_path", "C:\\x.ps1", "[file:name = 'x.ps1' AND file:parent_directory_ref.path = 'C:\\\\']"),
    ],
)
def test_build_pattern_canonical_form(kind: str, value: str, expected: str) -> None:
    pattern = build_pattern(kind, value)

    assert pattern == expected
    assert run_validator(pattern, "2.1") == []


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("ipv4-addr", "198.51.100.7/24", "not an IPv4 address/CIDR: 198.51.100.7/24 has host bits set"),
        ("ipv4-addr", "01.2.3.4", "not an IPv4 address/CIDR"),
        ("ipv6-addr", "203.0.113.5", "not an IPv6 address/CIDR"),
        ("domain-name", "203.0.113.5", "is an IP address, not a domain name"),
        ("domain-name", "localhost", "a domain name needs at least two labels, like example.org"),
        ("domain-name", "-bad.example", "label '-bad' must have 1 to 63 letters, digits, '-' or '_' "
                                         "and must not start or end with '-'"),
        ("domain-name", "bücher.example", "not an ASCII domain name; convert internationalized names to their xn-- form"),
        ("url", "login.example.org/path", "a URL must start with a scheme and '://', like https://"),
        ("url", "http://a.example/x y", "a URL must not contain white space"),
        ("url", "http://a.example:70000/", "not a valid URL: Port out of range 0-65535"),
        ("file_name", "dir/x.exe", "a file name must not contain a path separator; use file_path"),
        ("file_path", "x.exe", "a file path needs a directory part; use file_name for a bare name"),
        ("file_path", "/tmp/", "the path ends with a separator, so it names a directory"),
        ("url", "http://a.example/\nx", "contains control characters"),
        ("sha1", "zz39a3ee5e6b4b0d3255bfef95601890afd80709", "a SHA-1 must be 40 hex digits; got 40 characters"),
        ("ipv5", "1.2.3.4", "unknown observable kind; expected one of " + ", ".join(OBSERVABLE_KINDS)),
    ],
)
def test_build_pattern_rejects_value(kind: str, value: str, reason: str) -> None:
    with pytest.raises(PatternRejected) as excinfo:
        build_pattern(kind, value)

    assert excinfo.value.reason == reason


def test_pattern_rejected_message_names_kind_and_value() -> None:
    with pytest.raises(PatternRejected) as excinfo:
        build_pattern("ipv4", "http://198.51.100.7/login")

    assert str(excinfo.value) == (
        "cannot build a STIX pattern for ipv4 value 'http://198.51.100.7/login': not an IPv4 address/CIDR"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.5", "ipv4-addr"),
        ("198.51.100.0/24", "ipv4-addr"),
        ("2001:db8::1", "ipv6-addr"),
        ("http://198.51.100.7/login", "url"),
        ("login.example.org", "domain-name"),
    ],
)
def test_observable_type_of_known_values(value: str, expected: str) -> None:
    assert observable_type_of(value) == expected


def test_observable_type_of_unknown_value_raises() -> None:
    with pytest.raises(PatternRejected) as excinfo:
        observable_type_of("not a thing")

    assert excinfo.value.kind == "observable"
    assert excinfo.value.reason == "not an IPv4/IPv6 address or network, URL or domain name"


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("ipv4-addr", "203.0.113.5"),
        ("url", "https://a.example/o'brien\\x"),
        ("file_name", "o'brien.exe"),
        ("file_path", "C:\\Users\\alice\\AppData\\Local\\Temp\\x.ps1"),
        ("file_path", "/x"),
        ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
        ("sha512", "c" * 128),
    ],
)
def test_pattern_observable_reads_built_pattern(kind: str, value: str) -> None:
    assert pattern_observable(build_pattern(kind, value)) == (kind, value)


@pytest.mark.parametrize(
    "pattern",
    [
        "[ipv4-addr:value = '1.2.3.4'] AND [ipv4-addr:value = '5.6.7.8']",
        "[ipv4-addr:value != '1.2.3.4']",
        "[network-traffic:dst_port = 443]",
        "[ipv4-addr:value = '1.2.3.4'",
    ],
)
def test_pattern_observable_other_shapes_raise(pattern: str) -> None:
    with pytest.raises(PatternRejected) as excinfo:
        pattern_observable(pattern)

    assert excinfo.value.kind == "pattern"


def test_escape_and_unescape_are_inverse() -> None:
    value = "a'b\\c\\'d"

    assert escape_string_literal(value) == "a\\'b\\\\c\\\\\\'d"
    assert unescape_string_literal("'" + escape_string_literal(value) + "'") == value


@pytest.mark.parametrize(
    ("kind", "value", "pattern"),
    [
        ("ja3", "6734F37431670B3AB4292B8F60F29984", "[x-fti-tls-fingerprint:ja3 = '6734f37431670b3ab4292b8f60f29984']"),
        ("ja3s", "e7d705a3286e19ea42f587b344ee6865", "[x-fti-tls-fingerprint:ja3s = 'e7d705a3286e19ea42f587b344ee6865']"),
        ("x509-sha1", "0a6b201a7bff643cc5dd6631e5940e858ee07d25",
         "[x509-certificate:hashes.'SHA-1' = '0a6b201a7bff643cc5dd6631e5940e858ee07d25']"),
        ("x509-sha256", "b2dafbcdbc75210672f137f27ce882ccb799887631655d4f11191d5a678e44fe",
         "[x509-certificate:hashes.'SHA-256' = 'b2dafbcdbc75210672f137f27ce882ccb799887631655d4f11191d5a678e44fe']"),
    ],
)
def test_build_pattern_fingerprints_round_trip(kind: str, value: str, pattern: str) -> None:
    built = build_pattern(kind, value)

    assert built == pattern
    assert pattern_observable(built) == (kind, value.lower())
