"""Write and read STIX 2.1 timestamps.

STIX 2.1 (section 3.2) writes timestamps in UTC with a literal ``Z``, and requires
``created`` and ``modified`` to carry at least millisecond precision. Our objects
use exactly three fractional digits everywhere ("2024-05-01T10:00:00.000Z") with one
exception: properties that the stix2 library stores without a precision constraint
(``valid_from``, ``valid_until`` of an indicator). stix2 3.0 writes those without
trailing zeros, so :func:`format_timestamp_stix2_any` writes them the same way and
a ``stix2.parse`` and ``serialize`` round trip leaves the object byte for byte as we
built it.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from stix_mappings.errors import TimestampInvalid

# Any STIX timestamp: optional fraction of 1 to 9 digits, always UTC "Z".
STIX_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def _to_utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise TimestampInvalid(
            field, value, "must be timezone-aware; pass datetime(..., tzinfo=timezone.utc)"
        )
    return value.astimezone(timezone.utc)


def truncate_to_milliseconds(value: datetime, field: str = "timestamp") -> datetime:
    """Return ``value`` in UTC with the microseconds below one millisecond dropped.

    Raises
    ------
    TimestampInvalid
        If ``value`` is naive.
    """
    utc = _to_utc(value, field)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def format_timestamp(value: datetime, field: str = "timestamp") -> str:
    """Write ``value`` as "YYYY-mm-ddTHH:MM:SS.sssZ", truncating to milliseconds.

    Raises
    ------
    TimestampInvalid
        If ``value`` is naive.
    """
    utc = truncate_to_milliseconds(value, field)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_timestamp_stix2_any(value: datetime, field: str = "timestamp") -> str:
    """Write ``value`` (truncated to milliseconds) the way stix2 3.0 writes unconstrained timestamps.

    The fraction is written without trailing zeros and left out when it is zero,
    for example "2024-05-01T10:00:00Z" or "2024-05-01T10:00:00.25Z".

    Raises
    ------
    TimestampInvalid
        If ``value`` is naive.
    """
    utc = truncate_to_milliseconds(value, field)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_timestamp(text: str, field: str = "timestamp") -> datetime:
    """Read a STIX timestamp into an aware UTC datetime.

    Fractions finer than microseconds are truncated, because datetime stores no more.

    Raises
    ------
    TimestampInvalid
        If ``text`` is not a string in STIX timestamp form or names no real instant
        (month 13, February 30...).
    """
    if not isinstance(text, str) or not STIX_TIMESTAMP_RE.match(text):
        raise TimestampInvalid(field, text, "must be a STIX timestamp like 2024-05-01T10:00:00.000Z")
    seconds, _, fraction = text[:-1].partition(".")
    try:
        parsed = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S")
    except ValueError as err:
        raise TimestampInvalid(field, text, f"is not a valid date and time ({err})") from err
    microsecond = int(fraction[:6].ljust(6, "0")) if fraction else 0
    return parsed.replace(microsecond=microsecond, tzinfo=timezone.utc)
