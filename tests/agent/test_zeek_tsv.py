"""Tests for agent.zeek_tsv: header-driven TSV reading, repeated headers and published quirks."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.zeek import ParseStats, iter_zeek_records

UTC = timezone.utc

HEADER = (
    "#separator \\x09\n"
    "#set_separator\t,\n"
    "#empty_field\t(empty)\n"
    "#unset_field\t-\n"
    "#path\tconn\n"
    "#open\t2024-05-01-10-00-00\n"
    "#fields\tts\tuid\tid.orig_h\torig_bytes\ttunnel_parents\n"
    "#types\ttime\tstring\taddr\tcount\tset[string]\n"
)


def write_log(tmp_path: Path, text: str, name: str = "conn.log") -> Path:
    log_file = tmp_path / name
    log_file.write_bytes(text.encode("utf-8"))
    return log_file


def test_tsv_row_typed(tmp_path: Path) -> None:
    log_file = write_log(tmp_path, HEADER + "1714557600.000001\tC1\t192.0.2.1\t12\tA,B\n")

    (record,) = iter_zeek_records(log_file)

    assert record.log_path == "conn"
    assert record.line == 9
    assert record.fields == {"ts": datetime(2024, 5, 1, 10, 0, 0, 1, tzinfo=UTC), "uid": "C1",
                             "id.orig_h": "192.0.2.1", "orig_bytes": 12, "tunnel_parents": ["A", "B"]}


def test_tsv_repeated_header_honoured(tmp_path: Path) -> None:
    """Concatenated logs each carry a header; the second one changes every token."""
    second_header = (
        "#separator \\x7c\n"
        "#set_separator|;\n"
        "#empty_field|EMPTY\n"
        "#unset_field|NONE\n"
        "#path|dns\n"
        "#fields|ts|query|answers|rtt\n"
        "#types|time|string|vector[string]|interval\n"
    )
    text = (HEADER + "1.0\tC1\t192.0.2.1\t1\t(empty)\n#close\t2024-05-01-11-00-00\n" + second_header
            + "2.0|a,b.example|x;NONE;y|NONE\n3.0|EMPTY|EMPTY|0.5\n")
    log_file = write_log(tmp_path, text)
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    assert [(r.log_path, r.line) for r in records] == [("conn", 9), ("dns", 18), ("dns", 19)]
    assert records[1].fields == {"ts": datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC), "query": "a,b.example",
                                 "answers": ["x", None, "y"], "rtt": None}
    assert records[2].fields["query"] == ""
    assert records[2].fields["answers"] == []
    assert stats.header_lines == 16
    assert stats.malformed_total == 0


def test_tsv_new_fields_drop_layout(tmp_path: Path) -> None:
    text = HEADER + "#fields\tts\tuid\n1.0\tC1\n"
    log_file = write_log(tmp_path, text)
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    assert records == []
    assert stats.malformed == {"no_header": 1}
    assert stats.errors[0].detail == "data line with no usable #types header line before it"


def test_tsv_stray_whitespace_before_header_line(tmp_path: Path) -> None:
    log_file = write_log(tmp_path, "\t" + HEADER + "1.0\tC1\t192.0.2.1\t1\t-\n")
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    assert [r.fields["uid"] for r in records] == ["C1"]
    assert stats.header_lines == 8


def test_tsv_three_space_join_split(tmp_path: Path) -> None:
    text = (
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
        "#fields\tts\tuid\ttunnel_parents   label   detailed-label\n"
        "#types\ttime\tstring\tset[string]   string   string\n"
        "1.0\tC1\t-   Malicious   C&C\n"
        "2.0\tC2\t-   Benign   -\n"
        "3.0\tC3\t(empty)\tBenign\tx\n"  # already tab-separated: read as is
    )
    log_file = write_log(tmp_path, text)
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    assert [r.fields for r in records] == [
        {"ts": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), "uid": "C1", "tunnel_parents": None,
         "label": "Malicious", "detailed-label": "C&C"},
        {"ts": datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC), "uid": "C2", "tunnel_parents": None,
         "label": "Benign", "detailed-label": None},
        {"ts": datetime(1970, 1, 1, 0, 0, 3, tzinfo=UTC), "uid": "C3", "tunnel_parents": [],
         "label": "Benign", "detailed-label": "x"},
    ]
    assert stats.malformed_total == 0


def test_tsv_three_space_join_row_with_wrong_parts(tmp_path: Path) -> None:
    text = (
        "#separator \\x09\n#fields\tts\tlabel   detailed-label\n#types\ttime\tstring   string\n"
        "1.0\tBenign\n"
        "2.0\tA   B   C\n"
    )
    log_file = write_log(tmp_path, text)
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    # "A   B   C" splits at most once, so `detailed-label` keeps the rest of the text.
    assert [r.fields["detailed-label"] for r in records] == ["B   C"]
    assert stats.malformed == {"column_count": 1}
    assert stats.errors[0].line == 4


def test_tsv_header_join_mismatch_invalid(tmp_path: Path) -> None:
    text = "#separator \\x09\n#fields\tts\tlabel   detailed-label\n#types\ttime\tstring\tstring\n1.0\ta\tb\n"
    log_file = write_log(tmp_path, text)
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    assert records == []
    assert stats.malformed == {"invalid_header": 1, "no_header": 1}


def test_tsv_minimal_header_defaults(tmp_path: Path) -> None:
    """Only #fields and #types are required; the rest fall back to Zeek's defaults."""
    log_file = write_log(tmp_path, "#fields\tts\tquery\n#types\ttime\tstring\n1.5\t(empty)\n2.5\t-\n",
                         name="dns.2024-05-01.log")

    records = list(iter_zeek_records(log_file))

    assert [r.log_path for r in records] == ["dns", "dns"]
    assert [r.fields["query"] for r in records] == ["", None]


def test_tsv_custom_unset_and_empty_tokens(tmp_path: Path) -> None:
    text = ("#separator \\x09\n#set_separator\t;\n#empty_field\tEMPTY\n#unset_field\tUNSET\n"
            "#fields\ta\tb\tc\td\n#types\tstring\tset[string]\tstring\tcount\n"
            "-\tx;UNSET\tEMPTY\tUNSET\n")
    log_file = write_log(tmp_path, text)

    (record,) = iter_zeek_records(log_file)

    assert record.fields == {"a": "-", "b": ["x", None], "c": "", "d": None}


def test_tsv_unknown_type_kept_as_string(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log_file = write_log(tmp_path, "#fields\tts\tblob\n#types\ttime\topaque\n1.0\tab\\x2dc\n")

    with caplog.at_level(logging.WARNING, logger="agent"):
        (record,) = iter_zeek_records(log_file)

    assert record.fields["blob"] == "ab-c"
    assert [r.getMessage() for r in caplog.records] == [
        f"zeek log {log_file} line 2: field blob has the unknown type 'opaque'; its values are kept as strings"
    ]


@pytest.mark.parametrize(
    ("header", "details"),
    [
        ("#types\ttime\n#fields\tts\n", ["#types line with no valid #fields line before it"]),
        ("#fields\tts\tts\n#types\ttime\ttime\n", ["#fields repeats the column names ['ts']"]),
        ("#fields\tts\tuid\n#types\ttime\n", ["#fields declares 2 columns but #types declares 1"]),
        ("#fields\n#types\ttime\n", ["#fields line has no value", "#types line with no valid #fields line before it"]),
        ("#set_separator\n#fields\tts\n#types\ttime\n", ["#set_separator line has no value"]),
        ("#separator\n#fields\tts\n#types\ttime\n", ["#separator declares an empty separator"]),
    ],
)
def test_tsv_invalid_header_lines(tmp_path: Path, header: str, details: list[str]) -> None:
    log_file = write_log(tmp_path, header + "1.0\n")
    stats = ParseStats()

    list(iter_zeek_records(log_file, stats=stats))

    assert [e.detail for e in stats.errors if e.reason == "invalid_header"] == details
    assert stats.malformed["invalid_header"] == len(details)


def test_tsv_unknown_directive_skipped(tmp_path: Path) -> None:
    log_file = write_log(tmp_path, HEADER + "#comment\tby hand\n#\n1.0\tC1\t192.0.2.1\t1\t-\n")
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    assert len(records) == 1
    assert stats.skipped == 2
    assert stats.malformed_total == 0


def test_tsv_invalid_value_names_field(tmp_path: Path) -> None:
    log_file = write_log(tmp_path, HEADER + "1.0\tC1\t192.0.2.1\tmany\t-\n2.0\tC2\t192.0.2.1\t5\t-\n")
    stats = ParseStats()

    records = list(iter_zeek_records(log_file, stats=stats))

    assert [r.fields["uid"] for r in records] == ["C2"]
    assert stats.malformed == {"invalid_value:orig_bytes": 1}
    assert stats.errors[0].detail == "field orig_bytes (count): invalid unsigned integer 'many'"
    assert str(stats.errors[0]) == (f"{log_file} line 9: field orig_bytes (count): invalid unsigned integer "
                                    "'many'; line skipped")


def test_tsv_escaped_hash_at_line_start_is_data(tmp_path: Path) -> None:
    """Zeek escapes a data line's leading "#" so it cannot pass for a header line."""
    log_file = write_log(tmp_path, "#fields\tchannel\tts\n#types\tstring\ttime\n\\x23zeek\t1.0\n")

    (record,) = iter_zeek_records(log_file)

    assert record.fields["channel"] == "#zeek"
