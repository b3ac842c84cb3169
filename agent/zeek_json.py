"""Read Zeek's JSON-lines log format (``LogAscii::use_json``, or the json-streaming-logs package).

Each line is one object with flat dotted keys (``id.orig_h``), arrays for sets and vectors, and
no key at all for an unset field. The log path comes from ``_path`` when the writer adds it.
JSON carries no types, so values keep their JSON types, except the time fields listed in
``TIME_FIELDS``. Zeek writes those in one of three encodings, depending on
``LogAscii::json_timestamps``:

- ``JSON::TS_EPOCH``: float seconds (``1714557600.123456``),
- ``JSON::TS_MILLIS``: integer milliseconds (``1714557600123``),
- ``JSON::TS_ISO8601``: a string (``"2024-05-01T10:00:00.123456Z"``).

An integer is always read as milliseconds. Zeek writes epoch seconds with a decimal point
even when the fraction is zero, so integer milliseconds are never read as seconds.

Lines are parsed with orjson. Unlike the standard library, it reads an integer beyond 64 bits
as a float. Zeek writes counts of at most 64 bits, so only a damaged or foreign line meets this.

Unlike the TSV reader, string values are not ``\\xNN``-decoded. Zeek's JSON writer spells an
unprintable byte as the four characters ``\\xNN``. A backslash that was already in the data
reaches the decoded JSON string unchanged, so the two cannot be distinguished. For example,
``ntp.log``'s ``ref_id`` is four NUL characters when read from TSV but the text
``\\x00\\x00\\x00\\x00`` when read from JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson

from agent import strict_json
from agent.network import conn_value_problem
from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from agent.zeek_values import (
    TS_MAX_MICROS,
    ImplausibleTimestamp,
    check_plausible_ts,
    datetime_from_micros,
    micros_from_float,
    micros_from_iso8601,
)

# Every log's `ts`, and `_write_ts` of json-streaming-logs.
COMMON_TIME_FIELDS = frozenset({"ts", "_write_ts"})

# Other fields of type `time`, by log path, in Zeek's base and policy scripts. They are listed
# per log because the same name can be a string elsewhere (smtp's `from`). A `time` field of a
# log not listed here stays in its JSON form.
TIME_FIELDS_BY_PATH: dict[str, frozenset[str]] = {
    "x509": frozenset({"certificate.not_valid_before", "certificate.not_valid_after"}),
    "ntp": frozenset({"ref_time", "org_time", "rec_time", "xmt_time"}),
    "kerberos": frozenset({"from", "till"}),
    "ocsp": frozenset({"thisUpdate", "nextUpdate", "revoketime"}),
    "pe": frozenset({"compile_ts"}),
    "smb_files": frozenset({"times.modified", "times.accessed", "times.created", "times.changed"}),
}
_TIME_FIELDS = {path: COMMON_TIME_FIELDS | names for path, names in TIME_FIELDS_BY_PATH.items()}

# A JSON escape of a UTF-16 surrogate (\ud800 to \udfff). Zeek never writes one, but a lone
# surrogate would make the value impossible to encode as UTF-8 further on.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def parse_json_lines(
    lines: Iterable[tuple[int, str]],
    *,
    source: str,
    default_path: str,
    stats: ParseStats,
    reporter: MalformedLineReporter,
) -> Iterator[ZeekRecord]:
    """Yield a record for each JSON object line, and count and report every other line.

    ``lines`` yields (1-based line number, text without the line ending) pairs. Blank lines
    are counted as skipped without a warning.
    """
    for number, text in lines:
        if not text or text.isspace():
            stats.skipped += 1
            continue

        # orjson parses several times faster than json. Where it rejects a line for a lone
        # surrogate escape or nesting beyond 1024, json decides, and it rejects NaN and
        # infinite numbers as orjson does (agent.strict_json). ValueError also covers
        # integers longer than Python's 4300-digit conversion limit.
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                obj = strict_json.loads(text)
            except (ValueError, RecursionError) as err:
                reporter.report(number, "invalid_json", f"invalid JSON: {_describe_json_error(err)}")
                continue
        if not isinstance(obj, dict):
            reporter.report(number, "not_json_object", f"JSON {type(obj).__name__} where Zeek writes an object")
            continue
        if "\\u" in text and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
            reporter.count_invalid_utf8()
            obj = _replace_lone_surrogates(obj)

        path = obj.pop("_path", None)
        log_path = path if isinstance(path, str) and path else default_path
        fields = _flatten(obj) if dict in map(type, obj.values()) else obj

        try:
            _convert_time_fields(fields, log_path)
        except _InvalidTime as invalid:
            if isinstance(invalid.error, ImplausibleTimestamp):
                reporter.report(number, "implausible_timestamp", f"field {invalid.name}: {invalid.error}")
            else:
                reporter.report(number, f"invalid_value:{invalid.name}", f"field {invalid.name}: {invalid.error}")
            continue

        if log_path == "conn" and (problem := conn_value_problem(fields)) is not None:
            reporter.report(number, f"invalid_value:{problem[0]}", f"field {problem[0]}: {problem[1]}")
            continue

        stats.records += 1
        yield ZeekRecord(log_path, fields, source, number)


class _InvalidTime(Exception):
    def __init__(self, name: str, error: ValueError) -> None:
        self.name, self.error = name, error
        super().__init__(f"field {name}: {error}")


def _convert_time_fields(fields: dict[str, Any], log_path: str) -> None:
    """Replace each time field's JSON value with an aware UTC datetime, in place."""
    for name in _TIME_FIELDS.get(log_path, COMMON_TIME_FIELDS):
        value = fields.get(name)
        if value is None:
            continue
        try:
            fields[name] = _datetime_from_json(value, check_ts=name == "ts")
        except ValueError as err:
            raise _InvalidTime(name, err) from err


def _datetime_from_json(value: Any, *, check_ts: bool) -> datetime:
    # bool is a subclass of int but never a timestamp.
    if isinstance(value, bool):
        raise ValueError(f"invalid timestamp {value!r}")
    if isinstance(value, int):
        micros = value * 1000
    elif isinstance(value, float):
        micros = micros_from_float(value)
    elif isinstance(value, str):
        micros = micros_from_iso8601(value)
    else:
        raise ValueError(f"invalid timestamp of JSON type {type(value).__name__}")

    # The value is written out only for the message of an implausible ts.
    if check_ts and not 0 <= micros < TS_MAX_MICROS:
        check_plausible_ts(micros, json.dumps(value))
    return datetime_from_micros(micros)


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested objects into dotted keys, the names Zeek gives fields of records in records."""
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _replace_lone_surrogates(value: Any) -> Any:
    """Return a copy with each lone surrogate in keys and strings replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_replace_lone_surrogates(key): _replace_lone_surrogates(item) for key, item in value.items()}
    return value


def _describe_json_error(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at column {err.colno}"
    if isinstance(err, RecursionError):
        return "nesting too deep"
    return str(err)
