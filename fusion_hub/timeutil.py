"""STIX/TAXII timestamp parsing and formatting.

STIX 2.1 (section 3.2) timestamps are RFC 3339 in UTC with a literal ``Z`` and any number of
fractional digits. The hub compares them as integer microseconds since the epoch, because
string comparison breaks when two producers use different precision
(``10:00:00Z`` against ``10:00:00.000Z``). TAXII 2.1 ``date_added`` values are written with
microseconds so that pagination by ``added_after`` never skips an object.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
# Checked before ``datetime.fromisoformat``, which also takes forms STIX does not allow
# (a space for ``T``, offsets, dates alone).
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z", re.ASCII)


def parse_timestamp(text: str) -> datetime:
    """Parse a STIX timestamp into an aware UTC datetime.

    Digits past the sixth fractional digit are dropped, since Python datetimes stop at
    microseconds.

    Raises
    ------
    ValueError
        If ``text`` is not ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` or not a valid date and time.
    """
    if not isinstance(text, str):
        raise ValueError(f"timestamp must be a string; got {text!r}")
    if _TIMESTAMP_RE.fullmatch(text) is None:
        raise ValueError(f"timestamp must look like 2024-05-01T10:00:00.000Z; got {text!r}")
    # Since Python 3.11, fromisoformat reads the trailing Z as UTC and truncates fractions
    # past six digits. It is faster than building the datetime from the regex groups.
    try:
        return datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(f"timestamp {text!r} is not a valid date and time: {err}") from err


@lru_cache(maxsize=4096)
def timestamp_micros(text: str) -> int:
    """Parse a STIX timestamp string into epoch microseconds, as ``parse_timestamp`` does.

    The results are cached, because the objects of one envelope often share their
    ``created`` and ``modified`` values. ``text`` must be a string.
    """
    return to_micros(parse_timestamp(text))


def to_micros(moment: datetime) -> int:
    """Return an aware datetime as integer microseconds since the Unix epoch.

    A naive datetime is read as local time, as ``datetime.astimezone`` reads it.
    """
    if moment.tzinfo is None:
        moment = moment.astimezone(timezone.utc)
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """Return the aware UTC datetime for integer microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def format_micros(micros: int) -> str:
    """Format epoch microseconds as a TAXII timestamp with six fractional digits."""
    return from_micros(micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_millis(moment: datetime) -> str:
    """Format an aware datetime as a STIX timestamp with millisecond precision."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def truncate_to_millis(moment: datetime) -> datetime:
    """Drop sub-millisecond digits, so a datetime survives a millisecond STIX round trip."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)
