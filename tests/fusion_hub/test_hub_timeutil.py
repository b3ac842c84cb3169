"""STIX timestamp parsing of the hub."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fusion_hub.timeutil import parse_timestamp, timestamp_micros, to_micros


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-06-03T10:20:30Z", datetime(2024, 6, 3, 10, 20, 30, tzinfo=timezone.utc)),
    ("2024-06-03T10:20:30.5Z", datetime(2024, 6, 3, 10, 20, 30, 500_000, tzinfo=timezone.utc)),
    ("2024-06-03T10:20:30.123Z", datetime(2024, 6, 3, 10, 20, 30, 123_000, tzinfo=timezone.utc)),
    ("2024-06-03T10:20:30.123456Z",
     datetime(2024, 6, 3, 10, 20, 30, 123_456, tzinfo=timezone.utc)),
    # Digits past microseconds are dropped, not rounded.
    ("2024-06-03T10:20:30.1234569Z",
     datetime(2024, 6, 3, 10, 20, 30, 123_456, tzinfo=timezone.utc)),
    ("2024-02-29T23:59:59.999Z", datetime(2024, 2, 29, 23, 59, 59, 999_000, tzinfo=timezone.utc)),
])
def test_parse_timestamp_stix_forms(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None
    assert parsed.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("text", [
    "2024-06-03T10:20:30Z\n",
    "2024-06-03 10:20:30Z",
    "2024-06-03T10:20:30+00:00",
    "2024-06-03T10:20:30",
    "2024-06-03",
    "20240603T102030Z",
    "2024-06-03T10:20:30.Z",
    "\u0662024-06-03T10:20:30Z",
    " 2024-06-03T10:20:30Z",
])
def test_parse_timestamp_rejects_other_forms(text: str) -> None:
    with pytest.raises(ValueError, match="must look like"):
        parse_timestamp(text)


@pytest.mark.parametrize("text", [
    "2024-02-30T10:20:30Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z",
    "2024-06-03T24:00:00Z", "2024-06-03T10:60:00Z", "2024-06-03T10:20:60Z",
    "0000-01-01T00:00:00Z",
])
def test_parse_timestamp_rejects_impossible_dates(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid date and time") as excinfo:
        parse_timestamp(text)
    assert repr(text) in str(excinfo.value)


@pytest.mark.parametrize("value", [None, 1717372800, ["2024-06-03T10:20:30Z"]])
def test_parse_timestamp_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_timestamp(value)  # type: ignore[arg-type]


def test_to_micros_of_parsed_timestamp() -> None:
    assert to_micros(parse_timestamp("1970-01-01T00:00:01.000001Z")) == 1_000_001


@pytest.mark.parametrize("text", ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123Z",
                                  "2024-05-01T10:00:00.123456789Z", "1969-12-31T23:59:59.5Z"])
def test_timestamp_micros_matches_parse(text: str) -> None:
    expected = to_micros(parse_timestamp(text))
    assert timestamp_micros(text) == expected
    # The second call comes from the cache.
    assert timestamp_micros(text) == expected


def test_timestamp_micros_value() -> None:
    assert timestamp_micros("1970-01-01T00:00:01.000002Z") == 1_000_002


def test_timestamp_micros_raises_every_time() -> None:
    """A rejected timestamp is never cached: each call raises the parser's error."""
    for _ in range(2):
        with pytest.raises(ValueError, match="not a valid date and time"):
            timestamp_micros("2024-02-30T00:00:00Z")
