"""STIX timestamp writing and reading."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from stix_mappings.errors import TimestampInvalid
from stix_mappings.timestamps import (
    format_timestamp,
    format_timestamp_stix2_any,
    parse_timestamp,
)


def test_format_timestamp_truncates_to_milliseconds() -> None:
    value = datetime(2024, 5, 1, 10, 0, 7, 123_987, tzinfo=timezone.utc)

    assert format_timestamp(value) == "2024-05-01T10:00:07.123Z"


def test_format_timestamp_converts_to_utc() -> None:
    value = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    assert format_timestamp(value) == "2024-05-01T10:00:00.000Z"


def test_format_timestamp_naive_raises() -> None:
    with pytest.raises(TimestampInvalid) as excinfo:
        format_timestamp(datetime(2024, 5, 1), "created")

    assert excinfo.value.field == "created"
    assert "timezone-aware" in excinfo.value.reason


@pytest.mark.parametrize(
    ("microsecond", "expected"),
    [
        (0, "2024-05-01T10:00:00Z"),
        (250_000, "2024-05-01T10:00:00.25Z"),
        (123_999, "2024-05-01T10:00:00.123Z"),
        (999, "2024-05-01T10:00:00Z"),
    ],
)
def test_format_timestamp_stix2_any_drops_trailing_zeros(microsecond: int, expected: str) -> None:
    value = datetime(2024, 5, 1, 10, 0, 0, microsecond, tzinfo=timezone.utc)

    assert format_timestamp_stix2_any(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
        ("2024-05-01T10:00:00.5Z", datetime(2024, 5, 1, 10, 0, 0, 500_000, tzinfo=timezone.utc)),
        ("2024-05-01T10:00:00.123456789Z", datetime(2024, 5, 1, 10, 0, 0, 123_456, tzinfo=timezone.utc)),
    ],
)
def test_parse_timestamp_reads_stix_forms(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["2024-05-01T10:00:00", "2024-05-01 10:00:00Z", "2024-05-01T10:00:00+00:00", 5])
def test_parse_timestamp_rejects_other_forms(text: object) -> None:
    with pytest.raises(TimestampInvalid) as excinfo:
        parse_timestamp(text)  # type: ignore[arg-type]

    assert excinfo.value.value == text


def test_parse_timestamp_impossible_date_raises() -> None:
    with pytest.raises(TimestampInvalid) as excinfo:
        parse_timestamp("2024-02-30T10:00:00.000Z", "round_start")

    assert excinfo.value.reason.startswith("is not a valid date and time")
