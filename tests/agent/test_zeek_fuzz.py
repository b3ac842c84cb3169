"""Hostile inputs for the Zeek reader: each is read to its end and every line is accounted for.

The invariant checked throughout is that every physical line is a record, a header line, a
skipped line or a malformed line with a named reason. Nothing is dropped silently, and nothing
raises.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from agent.zeek import ParseStats, ZeekRecord, iter_zeek_records

HEADER = (
    "#separator \\x09\n"
    "#set_separator\t,\n"
    "#empty_field\t(empty)\n"
    "#unset_field\t-\n"
    "#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\torig_bytes\n"
    "#types\ttime\tstring\taddr\tcount\n"
)
HEADER_LINES = 7
ROW = "1714557600.000001\tC1\t192.0.2.1\t12\n"


def read(tmp_path: Path, data: bytes, **options: int) -> tuple[list[ZeekRecord], ParseStats]:
    log_file = tmp_path / "conn.log"
    log_file.write_bytes(data)
    stats = ParseStats()
    records = list(iter_zeek_records(log_file, stats=stats, **options))
    return records, stats


def physical_lines(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def assert_every_line_accounted(data: bytes, stats: ParseStats) -> None:
    accounted = stats.records + stats.header_lines + stats.skipped + stats.malformed_total
    assert accounted == physical_lines(data)


def test_truncated_types_line(tmp_path: Path) -> None:
    data = (HEADER.replace("#types\ttime\tstring\taddr\tcount\n", "#types\ttime\tstr") + "\n" + ROW * 2).encode()

    records, stats = read(tmp_path, data)

    assert records == []
    assert stats.malformed == {"invalid_header": 1, "no_header": 2}
    assert_every_line_accounted(data, stats)


def test_file_ends_inside_header(tmp_path: Path) -> None:
    data = HEADER[:HEADER.index("#fields") + 14].encode()  # "#fields\tts\tuid" and EOF

    records, stats = read(tmp_path, data)

    assert records == []
    assert stats.malformed_total == 0
    assert stats.header_lines == 6
    assert_every_line_accounted(data, stats)


def test_fields_without_types(tmp_path: Path) -> None:
    data = (HEADER.replace("#types\ttime\tstring\taddr\tcount\n", "") + ROW * 3).encode()

    records, stats = read(tmp_path, data)

    assert records == []
    assert stats.malformed == {"no_header": 3}
    assert {e.detail for e in stats.errors} == {"data line with no usable #types header line before it"}
    assert_every_line_accounted(data, stats)


def test_data_before_any_header(tmp_path: Path) -> None:
    data = (ROW + HEADER + ROW).encode()

    records, stats = read(tmp_path, data)

    assert [r.line for r in records] == [9]
    assert stats.malformed == {"no_header": 1}
    assert stats.errors[0].detail == "data line with no usable #fields header line before it"
    assert_every_line_accounted(data, stats)


def test_more_and_fewer_values_than_fields(tmp_path: Path) -> None:
    data = (HEADER + ROW.replace("\n", "\textra\n") + ROW + "1.0\tC2\n" + "\n").encode()

    records, stats = read(tmp_path, data)

    assert [r.line for r in records] == [HEADER_LINES + 2]
    assert stats.malformed == {"column_count": 2}
    assert [e.detail for e in stats.errors] == ["5 values but #fields declares 4 columns",
                                                "2 values but #fields declares 4 columns"]
    assert stats.skipped == 1
    assert_every_line_accounted(data, stats)


def test_nul_bytes(tmp_path: Path) -> None:
    """A NUL run where a line starts is a copytruncate hole and is skipped; a NUL inside a line damages it."""
    data = (HEADER + ROW).encode() + b"\x00" * 4096 + ROW.encode() + b"17\x00\tC3\t192.0.2.1\t1\n" + ROW.encode()

    records, stats = read(tmp_path, data)

    assert [r.line for r in records] == [HEADER_LINES + 1, HEADER_LINES + 2, HEADER_LINES + 4]
    assert stats.nul_bytes_skipped == 4096
    assert stats.malformed == {"nul_byte": 1}
    assert [e.line for e in stats.errors] == [HEADER_LINES + 3]
    assert_every_line_accounted(data, stats)


def test_extremely_long_line(tmp_path: Path) -> None:
    data = (HEADER + ROW + "1.0\tC" + "x" * (3 * 1024 * 1024) + "\t192.0.2.1\t1\n" + ROW).encode()

    records, stats = read(tmp_path, data)

    assert [r.line for r in records] == [HEADER_LINES + 1, HEADER_LINES + 3]
    assert stats.malformed == {"line_too_long": 1}
    assert stats.errors[0].detail == "line longer than 1048576 bytes"
    assert_every_line_accounted(data, stats)


def test_long_line_at_end_without_newline(tmp_path: Path) -> None:
    data = (HEADER + ROW + "y" * 200).encode()

    records, stats = read(tmp_path, data, max_line_bytes=100)

    assert len(records) == 1
    assert stats.malformed == {"line_too_long": 1}
    assert_every_line_accounted(data, stats)


def test_line_exactly_at_limit_accepted(tmp_path: Path) -> None:
    row = b'{"ts":1.0}'
    data = row + b"\n" + row[:-1] + b' }\n'

    records, stats = read(tmp_path, data, max_line_bytes=len(row))

    assert [r.line for r in records] == [1]
    assert stats.malformed == {"line_too_long": 1}
    assert stats.errors[0].line == 2


def test_crlf_line_endings(tmp_path: Path) -> None:
    lf = (HEADER + ROW + "2.0\tC2\t192.0.2.2\t-\n").encode()
    crlf = lf.replace(b"\n", b"\r\n")

    lf_records, _ = read(tmp_path, lf)
    crlf_records, stats = read(tmp_path, crlf)

    assert [r.fields for r in crlf_records] == [r.fields for r in lf_records]
    assert crlf_records[1].fields["orig_bytes"] is None
    assert stats.malformed_total == 0
    assert_every_line_accounted(crlf, stats)


def test_crlf_json(tmp_path: Path) -> None:
    data = b'{"ts":1.5,"uid":"C1"}\r\n{"ts":2.5,"uid":"C2"}\r\n'

    records, stats = read(tmp_path, data)

    assert [r.fields["uid"] for r in records] == ["C1", "C2"]
    assert stats.malformed_total == 0


def test_invalid_utf8_replaced_not_fatal(tmp_path: Path) -> None:
    data = (HEADER + "1.0\tC\xe9").encode("latin-1") + b"\xff\xfe\t192.0.2.1\t1\n" + ROW.encode()

    records, stats = read(tmp_path, data)

    assert [r.fields["uid"] for r in records] == ["C\ufffd\ufffd\ufffd", "C1"]
    assert stats.invalid_utf8 == 1
    assert stats.malformed_total == 0


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1.0\tC\t192.0.2.1\tmany\n", "invalid_value:orig_bytes"),
        ("1.0\tC\t192.0.2.1\t-5\n", "invalid_value:orig_bytes"),
        ("1.0\tC\t999.0.0.1\t1\n", "invalid_value:id.orig_h"),
        ("1.0\tC\t(empty)\t1\n", "invalid_value:id.orig_h"),
        ("1.0.0\tC\t192.0.2.1\t1\n", "invalid_value:ts"),
        ("(empty)\tC\t192.0.2.1\t1\n", "invalid_value:ts"),
        ("1e\tC\t192.0.2.1\t1\n", "invalid_value:ts"),
        ("1e999999999\tC\t192.0.2.1\t1\n", "invalid_value:ts"),
        ("99999999999999999999\tC\t192.0.2.1\t1\n", "implausible_timestamp"),
        ("-0.5\tC\t192.0.2.1\t1\n", "implausible_timestamp"),
    ],
)
def test_invalid_values(tmp_path: Path, row: str, reason: str) -> None:
    data = (HEADER + row + ROW).encode()

    records, stats = read(tmp_path, data)

    assert len(records) == 1
    assert stats.malformed == {reason: 1}
    assert_every_line_accounted(data, stats)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{broken", "invalid_json"),
        ('{"ts": 1.0', "invalid_json"),
        ('{"ts": 1.0} trailing', "invalid_json"),
        ("[1, 2]", "not_json_object"),
        ('"text"', "not_json_object"),
        ("null", "not_json_object"),
        ("[" * 100000 + "]" * 100000, "invalid_json"),
        ('{"n": ' + "9" * 5000 + "}", "invalid_json"),
        ("1.0\tC1\t192.0.2.1\t12", "invalid_json"),
        ('{"ts": "\ud800"}', "invalid_value:ts"),
    ],
)
def test_hostile_json_lines(tmp_path: Path, line: str, reason: str) -> None:
    data = ('{"ts":1.0}\n' + line + '\n{"ts":2.0}\n').encode("utf-8", "surrogatepass")

    records, stats = read(tmp_path, data)

    assert [r.line for r in records] == [1, 3]
    assert stats.malformed == {reason: 1}
    assert_every_line_accounted(data, stats)


def test_truncated_gzip_yields_what_precedes(tmp_path: Path) -> None:
    rows = "".join(f"{1714557600 + i}.000000\tC{i}\t192.0.2.1\t{i}\n" for i in range(20000))
    whole = gzip.compress((HEADER + rows).encode())
    data = whole[: len(whole) // 2]

    records, stats = read(tmp_path, data)

    assert 0 < len(records) < 20000
    assert [r.fields["orig_bytes"] for r in records] == list(range(len(records)))
    assert stats.malformed == {"truncated_gzip": 1}
    assert stats.errors[0].line == HEADER_LINES + len(records) + 1


def test_empty_file(tmp_path: Path) -> None:
    records, stats = read(tmp_path, b"")

    assert records == []
    assert (stats.records, stats.header_lines, stats.skipped, stats.malformed_total) == (0, 0, 0, 0)


def test_only_blank_lines(tmp_path: Path) -> None:
    data = b"\n\n\r\n"

    records, stats = read(tmp_path, data)

    assert records == []
    assert stats.skipped == 3
    assert_every_line_accounted(data, stats)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_never_raise(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    alphabet = b"\t\n\r\x00\\x0-9#{}[]\",:.-(empty)abcT F\xff\xc3"
    data = (HEADER + ROW).encode() + bytes(rng.choice(alphabet) for _ in range(20000))

    records, stats = read(tmp_path, data)

    assert len(records) >= 1
    assert_every_line_accounted(data, stats)


@pytest.mark.parametrize("seed", range(5))
def test_mutated_rows_never_raise(tmp_path: Path, seed: int) -> None:
    """Rows with random bytes flipped: each is a record or a counted malformed line."""
    rng = random.Random(seed)
    rows = []
    for i in range(300):
        row = bytearray(f"{1714557600 + i}.5\tC{i}\t192.0.2.{i % 250}\t{i}\n".encode())
        for _ in range(rng.randrange(3)):
            row[rng.randrange(len(row) - 1)] = rng.choice(b"\t\\x-,.#9a\x00\xff ")
        rows.append(bytes(row))
    data = HEADER.encode() + b"".join(rows)

    records, stats = read(tmp_path, data)

    assert all(isinstance(r.fields["orig_bytes"], int) for r in records)
    assert_every_line_accounted(data, stats)


def test_json_lone_surrogate_replaced(tmp_path: Path) -> None:
    data = b'{"ts":1.0,"query":"a\\ud800b","emoji":"\\ud83d\\ude00","list":["\\udfff"]}\n'

    records, stats = read(tmp_path, data)

    assert records[0].fields["query"] == "a\ufffdb"
    assert records[0].fields["emoji"] == "\U0001f600"
    assert records[0].fields["list"] == ["\ufffd"]
    assert stats.invalid_utf8 == 1
    assert stats.malformed_total == 0


def test_long_value_detail_truncated(tmp_path: Path) -> None:
    data = (HEADER + "1.0\tC\t192.0.2.1\t" + "9" * 5000 + "x\n").encode()

    _, stats = read(tmp_path, data)

    (error,) = stats.errors
    assert error.reason == "invalid_value:orig_bytes"
    assert len(error.detail) < 400
    assert error.detail.endswith("... (5054 characters)")
