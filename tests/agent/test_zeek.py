"""Tests for agent.zeek: the value semantics of field case 001, both formats, and the front door."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.errors import LogReadError, MalformedLogLine
from agent.zeek import ParseStats, ZeekRecord, iter_zeek_records, log_path_from_name

CASE = "001-zeek-tsv-json-value-semantics"
UTC = timezone.utc
MISSING = object()


@pytest.fixture()
def case_tsv(cases_dir: Path) -> Path:
    return cases_dir / f"{CASE}.input.log"


@pytest.fixture()
def case_json(cases_dir: Path) -> Path:
    return cases_dir / f"{CASE}.input.json"


def records_by_uid(path: Path) -> dict[str, ZeekRecord]:
    return {record.fields["uid"]: record for record in iter_zeek_records(path)}


# One row per expected value in the table of field case 001.
CASE_001_TABLE = [
    ("CaBcDe1", "ts", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("CaBcDe1", "user_agent", None),
    ("CaBcDe1", "tags", []),
    ("CaBcDe1", "resp_mime_types", ["text/html"]),
    ("CaBcDe1", "id.orig_p", 49152),
    ("CaBcDe1", "status_code", 200),
    ("CaBcDe2", "host", "-"),
    ("CaBcDe2", "user_agent", ""),
    ("CaBcDe2", "username", "(empty)"),
    ("CaBcDe2", "tags", ["a,b", "c"]),
    ("CaBcDe2", "resp_mime_types", [None, "text/plain"]),
    ("CaBcDe2", "status_code", None),
    ("CaBcDe3", "ts", datetime(2024, 5, 1, 10, 0, 2, 500000, tzinfo=UTC)),
    ("CaBcDe3", "user_agent", "curl/8.0\tbeta"),
    ("CaBcDe3", "username", None),
    ("CaBcDe3", "tags", None),
    ("CaBcDe3", "resp_mime_types", []),
]


@pytest.mark.parametrize(("uid", "field", "expected"), CASE_001_TABLE,
                         ids=[f"{uid}-{field}" for uid, field, _ in CASE_001_TABLE])
def test_case_001_tsv_value(case_tsv: Path, uid: str, field: str, expected: Any) -> None:
    records = records_by_uid(case_tsv)

    value = records[uid].fields[field]

    assert value == expected
    assert type(value) is type(expected)


def test_case_001_tsv_yields_three_records(case_tsv: Path) -> None:
    stats = ParseStats()

    records = list(iter_zeek_records(case_tsv, stats=stats))

    assert [r.fields["uid"] for r in records] == ["CaBcDe1", "CaBcDe2", "CaBcDe3"]
    assert [r.line for r in records] == [9, 10, 11]
    assert {r.log_path for r in records} == {"http"}
    assert stats.records == 3
    assert stats.header_lines == 9
    assert stats.malformed_total == 0
    assert stats.skipped == 0


def test_case_001_tsv_without_close_is_valid(case_tsv: Path, tmp_path: Path) -> None:
    """A file still being written has no #close and may lack the final newline."""
    lines = case_tsv.read_bytes().splitlines(keepends=True)
    open_file = tmp_path / "http.log"
    open_file.write_bytes(b"".join(lines[:-1]).rstrip(b"\n"))

    records = list(iter_zeek_records(open_file))

    assert not open_file.read_bytes().endswith(b"\n")
    assert [r.fields for r in records] == [r.fields for r in iter_zeek_records(case_tsv)]
    assert [r.line for r in records] == [9, 10, 11]


def test_case_001_json_yields_three_records(case_json: Path) -> None:
    stats = ParseStats()

    records = list(iter_zeek_records(case_json, stats=stats))

    assert len(records) == 3
    assert [r.line for r in records] == [1, 2, 3]
    assert stats.records == 3
    assert stats.malformed_total == 0


@pytest.mark.parametrize("line", [1, 2, 3])
def test_case_001_json_equals_tsv_first_row(case_tsv: Path, case_json: Path, line: int) -> None:
    tsv = records_by_uid(case_tsv)["CaBcDe1"].fields
    json_fields = list(iter_zeek_records(case_json))[line - 1].fields

    names = set(tsv) | set(json_fields)
    differing = {n for n in names if tsv.get(n, MISSING) != json_fields.get(n)}

    assert differing == ({"ts"} if line == 2 else set())
    assert "user_agent" not in json_fields
    assert json_fields.get("user_agent") is None


def test_case_001_json_millis_precision(case_json: Path) -> None:
    records = list(iter_zeek_records(case_json))

    assert records[1].fields["ts"] == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize("line", [1, 2, 3])
def test_case_001_json_ts_aware_utc(case_json: Path, line: int) -> None:
    ts = list(iter_zeek_records(case_json))[line - 1].fields["ts"]

    assert ts.tzinfo is not None
    assert ts.utcoffset() == timezone.utc.utcoffset(None)
    assert ts.year == 2024


def plant_line(source: Path, tmp_path: Path, line: str) -> Path:
    planted = tmp_path / "planted.json"
    planted.write_text(source.read_text() + line + "\n")
    return planted


@pytest.mark.parametrize(
    "ts",
    [
        "4102444800.5",  # 2100-01-01T00:00:00.5Z, float seconds
        "1714557600123.0",  # milliseconds written as float seconds: year 56,000
        "4102444800000",  # integer milliseconds: 2100-01-01
        '"2100-06-01T00:00:00Z"',
        "-1.0",  # before the epoch
        '"1969-12-31T23:59:59.999999Z"',
    ],
)
def test_case_001_json_implausible_ts_rejected(case_json: Path, tmp_path: Path, ts: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    planted = plant_line(case_json, tmp_path, '{"ts":%s,"uid":"CaBcDe9","id.orig_h":"192.0.2.10"}' % ts)
    stats = ParseStats()

    with caplog.at_level(logging.WARNING, logger="agent"):
        records = list(iter_zeek_records(planted, stats=stats))

    assert [r.fields["uid"] for r in records] == ["CaBcDe1"] * 3
    assert stats.malformed == {"implausible_timestamp": 1}
    error = stats.errors[0]
    assert (error.source, error.line, error.reason) == (str(planted), 4, "implausible_timestamp")
    assert f"{planted} line 4" in str(error)
    assert [r.getMessage() for r in caplog.records] == [f"zeek log {error}"]


def test_case_001_tsv_implausible_ts_rejected(case_tsv: Path, tmp_path: Path) -> None:
    lines = case_tsv.read_text().splitlines(keepends=True)
    row = lines[8].replace("1714557600.123456", "4102444800.000000", 1)
    planted = tmp_path / "http.log"
    planted.write_text("".join(lines[:9] + [row] + lines[9:]))
    stats = ParseStats()

    records = list(iter_zeek_records(planted, stats=stats))

    assert [r.line for r in records] == [9, 11, 12]
    assert stats.malformed == {"implausible_timestamp": 1}
    assert stats.errors[0].line == 10
    assert "4102444800.000000" in stats.errors[0].detail


def test_json_ts_plausible_bounds_kept(tmp_path: Path) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_text('{"ts":4102444799.999999}\n{"ts":0.0}\n')

    records = list(iter_zeek_records(log_file))

    assert records[0].fields["ts"] == datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert records[1].fields["ts"] == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        ("true", "invalid_value:ts"),
        ('"2024-05-01T10:00:00"', "invalid_value:ts"),  # no offset: the zone is unknown
        ('"yesterday"', "invalid_value:ts"),
        ("[1]", "invalid_value:ts"),
        ("NaN", "invalid_json"),  # not JSON, though Python's json reads it
        ("1e999", "invalid_json"),
    ],
)
def test_json_invalid_ts_counted(tmp_path: Path, ts: str, reason: str) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_text('{"ts":%s,"uid":"C1"}\n{"ts":1.5,"uid":"C2"}\n' % ts)
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    assert [r.fields["uid"] for r in records] == ["C2"]
    assert stats.malformed == {reason: 1}


def test_json_iso_offset_converted_to_utc(tmp_path: Path) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_text('{"ts":"2024-05-01T12:00:00.000001+02:00"}\n')

    (record,) = iter_zeek_records(log_file)

    assert record.fields["ts"] == datetime(2024, 5, 1, 10, 0, 0, 1, tzinfo=UTC)
    assert record.fields["ts"].tzinfo == UTC


def test_json_null_ts_is_unset(tmp_path: Path) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_text('{"ts":null,"uid":"C1"}\n')

    (record,) = iter_zeek_records(log_file)

    assert record.fields == {"ts": None, "uid": "C1"}


def test_json_path_and_write_ts(tmp_path: Path) -> None:
    log_file = tmp_path / "stream.json"
    log_file.write_text('{"_path":"dns","_write_ts":"2018-03-24T17:15:20.866586Z","ts":1.0}\n'
                        '{"ts":2.0}\n')

    first, second = iter_zeek_records(log_file)

    assert first.log_path == "dns"
    assert "_path" not in first.fields
    assert first.fields["_write_ts"] == datetime(2018, 3, 24, 17, 15, 20, 866586, tzinfo=UTC)
    assert second.log_path == "stream"


def test_json_log_specific_time_fields(tmp_path: Path) -> None:
    """kerberos `from` is a time, smtp `from` is a string; both come from one table."""
    log_file = tmp_path / "mixed.json"
    log_file.write_text('{"_path":"kerberos","ts":1.0,"from":1500000000.5}\n'
                        '{"_path":"smtp","ts":1.0,"from":"<alice@example.org>"}\n')

    kerberos, smtp = iter_zeek_records(log_file)

    assert kerberos.fields["from"] == datetime(2017, 7, 14, 2, 40, 0, 500000, tzinfo=UTC)
    assert smtp.fields["from"] == "<alice@example.org>"


def test_json_nested_objects_flattened(tmp_path: Path) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_text('{"ts":1.0,"id":{"orig_h":"192.0.2.1","orig_p":1,"resp":{"h":"x"}},"n":[1,2]}\n')

    (record,) = iter_zeek_records(log_file)

    assert record.fields == {"ts": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), "id.orig_h": "192.0.2.1",
                             "id.orig_p": 1, "id.resp.h": "x", "n": [1, 2]}


def test_json_blank_lines_skipped_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_text('\n{"ts":1.0}\n   \n\n{"ts":2.0}\n')
    stats = ParseStats()

    with caplog.at_level(logging.WARNING, logger="agent"):
        records = list(iter_zeek_records(log_file, stats=stats))

    assert [r.line for r in records] == [2, 5]
    assert stats.skipped == 3
    assert stats.malformed_total == 0
    assert caplog.records == []


def test_gzip_detected_by_magic_bytes(case_tsv: Path, tmp_path: Path) -> None:
    disguised = tmp_path / "http.log"
    disguised.write_bytes(gzip.compress(case_tsv.read_bytes()))
    plain_named_gz = tmp_path / "http.log.gz"
    shutil.copyfile(case_tsv, plain_named_gz)

    from_gzip = [r.fields for r in iter_zeek_records(disguised)]
    from_plain = [r.fields for r in iter_zeek_records(plain_named_gz)]

    assert from_gzip == [r.fields for r in iter_zeek_records(case_tsv)]
    assert from_plain == from_gzip


def test_gzip_json_read(case_json: Path, tmp_path: Path) -> None:
    compressed = tmp_path / "http.json.gz"
    compressed.write_bytes(gzip.compress(case_json.read_bytes()))

    records = list(iter_zeek_records(compressed))

    assert [r.fields for r in records] == [r.fields for r in iter_zeek_records(case_json)]
    assert records[0].log_path == "http"


def test_missing_file_raises_log_read_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.log"

    with pytest.raises(LogReadError) as excinfo:
        list(iter_zeek_records(missing))

    assert excinfo.value.path == str(missing)
    assert excinfo.value.reason == "No such file or directory"
    assert str(excinfo.value) == f"cannot read log file {missing}: No such file or directory"


def test_corrupt_gzip_raises_log_read_error(case_tsv: Path, tmp_path: Path) -> None:
    data = bytearray(gzip.compress(case_tsv.read_bytes()))
    data[12:40] = b"\xff" * 28  # damage the deflate stream right after the header
    corrupt = tmp_path / "http.log.gz"
    corrupt.write_bytes(bytes(data))

    with pytest.raises(LogReadError) as excinfo:
        list(iter_zeek_records(corrupt))

    assert excinfo.value.path == str(corrupt)
    assert "read failed after line" in excinfo.value.reason


def test_max_line_bytes_validated() -> None:
    with pytest.raises(ValueError, match="max_line_bytes must be at least 1; got 0"):
        iter_zeek_records(Path("conn.log"), max_line_bytes=0)


def test_iterator_close_stops_reading(case_tsv: Path) -> None:
    records = iter_zeek_records(case_tsv)
    first = next(records)

    records.close()

    assert first.fields["uid"] == "CaBcDe1"
    with pytest.raises(StopIteration):
        next(records)


def test_stats_shared_across_files(case_tsv: Path, case_json: Path) -> None:
    stats = ParseStats()

    list(iter_zeek_records(case_tsv, stats=stats))
    list(iter_zeek_records(case_json, stats=stats))

    assert stats.records == 6
    assert stats.header_lines == 9


def test_malformed_warnings_rate_limited(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_text("".join(f'{{"ts":1.0,"n":{i}}}\n' if i % 2 else "{broken\n" for i in range(24)))
    stats = ParseStats()

    with caplog.at_level(logging.WARNING, logger="agent"):
        records = list(iter_zeek_records(log_file, stats=stats))

    messages = [r.getMessage() for r in caplog.records]
    assert len(records) == 12
    assert stats.malformed == {"invalid_json": 12}
    assert len(messages) == 6
    assert messages[0] == (f"zeek log {log_file} line 1: invalid JSON: Expecting property name enclosed in "
                           "double quotes at column 2; line skipped")
    assert [m.split(" line ")[1].split(":")[0] for m in messages[:5]] == ["1", "3", "5", "7", "9"]
    assert messages[5] == (f"zeek log {log_file}: 12 malformed lines skipped in total (invalid_json 12); "
                           "only the first 5 were logged one by one")


def test_malformed_errors_kept_with_fields(tmp_path: Path) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_text('{"ts":1.0}\n[1, 2]\n')
    stats = ParseStats()

    list(iter_zeek_records(log_file, stats=stats))

    (error,) = stats.errors
    assert isinstance(error, MalformedLogLine)
    assert (error.source, error.line, error.reason) == (str(log_file), 2, "not_json_object")
    assert error.detail == "JSON list where Zeek writes an object"


def test_no_log_line_per_good_record(case_tsv: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="agent"):
        list(iter_zeek_records(case_tsv))

    assert [r.getMessage() for r in caplog.records] == [f"zeek log {case_tsv}: 3 records read"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("conn.log", "conn"), ("dns.json.gz", "dns"), ("conn.2024-05-01-10-00-00.log.gz", "conn"),
     ("weird", "weird"), (".hidden", ".hidden")],
)
def test_log_path_from_name(name: str, expected: str) -> None:
    assert log_path_from_name(Path("/var/log/zeek") / name) == expected


def test_json_dumps_output_read(tmp_path: Path) -> None:
    rows = [{"ts": 1714557600.5, "uid": f"C{i}", "tags": ["a", "b"], "ok": True, "n": None} for i in range(3)]
    log_file = tmp_path / "conn.log"
    log_file.write_text("".join(json.dumps(row) + "\n" for row in rows))

    records = list(iter_zeek_records(log_file))

    assert [r.fields["uid"] for r in records] == ["C0", "C1", "C2"]
    assert records[0].fields == {"ts": datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC), "uid": "C0",
                                 "tags": ["a", "b"], "ok": True, "n": None}
