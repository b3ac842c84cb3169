"""The conn fast path against the general reader: same connections, counts and reports, line by line."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import pytest

from agent.network import InternalNetworks, OrientationStats, orient_connections
from agent.zeek_conn import decode_lines, iter_connections
from agent.zeek_json import parse_json_lines
from agent.zeek_records import MalformedLineReporter, ParseStats
from agent.zeek_tsv import parse_tsv_lines
from tests.support.conn_logs import NETWORKS, REAL_CONN_LOGS, read_lines

HEADER = [
    "#separator \\x09",
    "#set_separator\t,",
    "#empty_field\t(empty)",
    "#unset_field\t-",
    "#path\tconn",
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\t"
    "resp_bytes\tconn_state\tlocal_orig\tmissed_bytes\thistory\torig_pkts\ttunnel_parents",
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tcount\t"
    "string\tcount\tset[string]",
]
ROW = ["1655071198.444458", "C1", "192.168.1.5", "62771", "40.74.108.123", "443", "tcp", "ssl", "1.135424",
       "1596", "4039", "SF", "T", "0", "ShADdaFf", "14", "(empty)"]


def read_both(lines: list[str], source: str = "conn.log", *, is_json: bool = False) -> tuple[tuple, tuple]:
    """Run the general reader with orientation and the fast path, and return what each produced."""
    numbered = list(enumerate(lines, start=1))
    results = []
    for fast in (False, True):
        internal = InternalNetworks(NETWORKS)
        stats, orientation = ParseStats(), OrientationStats()
        reporter = MalformedLineReporter(source, stats)
        if fast:
            connections = list(iter_connections(numbered, is_json=is_json, source=source, default_path="conn",
                                                internal=internal, stats=stats, orientation=orientation,
                                                reporter=reporter))
        else:
            parse = parse_json_lines if is_json else parse_tsv_lines
            records = parse(numbered, source=source, default_path="conn", stats=stats, reporter=reporter)
            connections = list(orient_connections(records, internal, stats=orientation))
        counts = {"records": stats.records, "header_lines": stats.header_lines, "skipped": stats.skipped,
                  "malformed": dict(stats.malformed), "errors": [str(error) for error in stats.errors]}
        results.append(([asdict(c) for c in connections], counts, asdict(orientation)))
    return results[0], results[1]


def row(**changes: str) -> str:
    names = HEADER[5].split("\t")[1:]
    values = dict(zip(names, ROW)) | changes
    return "\t".join(values[name] for name in names)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"id.orig_h": "40.74.108.7", "id.resp_h": "192.168.1.9"},  # inbound
        {"id.orig_h": "40.74.108.7"},  # both external
        {"id.resp_h": "192.168.7.7"},  # both internal
        {"id.resp_h": "2001:db8::1"},
        {"id.resp_h": "-"},
        {"id.resp_h": "300.1.1.1"},
        {"ts": "-"},
        {"ts": "1655071198"},
        {"ts": "1655071198."},
        {"ts": "1.655071198444458e+09"},
        {"ts": "1655071198.4444581"},
        {"ts": "5000000000.0"},
        {"ts": "١٢.٣"},
        {"duration": "-"},
        {"duration": "inf"},
        {"duration": "nan"},
        {"duration": "-Infinity"},
        {"duration": "1e999"},
        {"duration": "1e3"},
        {"duration": "x"},
        {"orig_bytes": "-", "resp_bytes": "-"},
        {"orig_bytes": ""},
        {"orig_bytes": "12a"},
        {"missed_bytes": "-"},
        {"missed_bytes": "١"},
        {"orig_pkts": "-1"},
        {"id.resp_p": "-"},
        {"local_orig": "-"},
        {"local_orig": "Y"},
        {"conn_state": "S0"},
        {"conn_state": "\\x53\\x30"},
        {"conn_state": "-"},
        {"conn_state": "(empty)"},
    ],
)
def test_fast_path_row_matches_general_reader(changes: dict[str, str]) -> None:
    general, fast = read_both(HEADER + [row(**changes)])

    assert fast == general


def test_fast_path_header_changes_match_general_reader() -> None:
    """A second header with another column order, a #path of another log, a data line before any header."""
    reordered = [HEADER[5].replace("\tproto", "").replace("\tuid", "\tuid\tproto"),
                 HEADER[6].replace("\tenum", "").replace("\tstring", "\tstring\tenum", 1)]
    lines = (["1655071198.1\tC0"] + HEADER + [row(), row(conn_state="REJ")] + reordered
             + ["\t".join(ROW[:2] + ["tcp"] + ROW[2:6] + ROW[7:])] + ["#path\tdns", row(), "", "#close\tx"])

    general, fast = read_both(lines)

    assert fast == general
    assert len(fast[0]) == 3


@pytest.mark.parametrize("relative", REAL_CONN_LOGS)
def test_fast_path_real_log_matches_general_reader(shared_data_dir: Path, relative: str) -> None:
    lines = read_lines(shared_data_dir / relative, 20000)

    general, fast = read_both(lines, is_json=lines[0].startswith("{"))

    assert fast == general
    assert len(fast[0]) > 0


def test_fast_path_damaged_lines_match_general_reader(shared_data_dir: Path) -> None:
    """Real rows with one byte replaced, deleted or duplicated."""
    path = shared_data_dir / "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled"
    lines = path.read_text(encoding="utf-8").split("\n")[:3000]
    generator = random.Random(7)
    damaged = lines[:8]
    for text in lines[8:]:
        position = generator.randrange(len(text) + 1)
        choice = generator.choice(["replace", "delete", "insert", "keep"])
        if choice == "replace":
            text = text[:position] + generator.choice("0-.\tx:T") + text[position + 1:]
        elif choice == "delete":
            text = text[:position] + text[position + 1:]
        elif choice == "insert":
            text = text[:position] + text[position:position + 1] + text[position:]
        damaged.append(text)

    general, fast = read_both(damaged)

    assert fast == general
    assert general[1]["malformed"]


def test_decode_lines_matches_line_by_line_decoding() -> None:
    lines = [b"plain", b"caf\xc3\xa9", b"cut \xc3", b"\xff\xfe bad", b"crlf\r", b"two\r\r", b"", b"\xe2\x82"]

    decoded = decode_lines(lines)
    nothing = decode_lines([])

    expected = []
    for data in lines:
        text = data.decode("utf-8", "replace")
        expected.append(text[:-1] if text.endswith("\r") else text)
    assert decoded == expected
    assert nothing == []


JSON_ROW = ('{"ts":1655071198.444458,"id.orig_h":"192.168.1.5","id.orig_p":62771,"id.resp_h":"40.74.108.123",'
            '"id.resp_p":443,"duration":1.135424,"orig_bytes":1596,"resp_bytes":4039,"conn_state":"SF"')


@pytest.mark.parametrize(("extra", "reason"), [
    (',"duration":"abc"', "invalid_value:duration"),
    (',"duration":"1.5"', "invalid_value:duration"),
    (',"duration":1e999', "invalid_json"),
    (',"duration":NaN', "invalid_json"),
    (',"duration":' + "9" * 400, "invalid_value:duration"),
    (',"id.resp_p":[443]', "invalid_value:id.resp_p"),
    (',"id.orig_p":"62771"', "invalid_value:id.orig_p"),
    (',"id.resp_p":true', "invalid_value:id.resp_p"),
    (',"conn_state":["S0"]', "invalid_value:conn_state"),
    (',"orig_bytes":"12"', "invalid_value:orig_bytes"),
    (',"resp_bytes":-5', "invalid_value:resp_bytes"),
    (',"resp_bytes":[1]', "invalid_value:resp_bytes"),
    (',"id.resp_p":65536', "invalid_value:id.resp_p"),
    (',"id.orig_p":-1', "invalid_value:id.orig_p"),
    (',"duration":-0.5', "invalid_value:duration"),
    (',"duration":-3', "invalid_value:duration"),
])
def test_json_conn_bad_value_reported(extra: str, reason: str) -> None:
    """A repeated key wins over the row's own value, so each line contains one bad value and stays readable."""
    general, fast = read_both([JSON_ROW + extra + "}", JSON_ROW + "}"], is_json=True)

    assert fast == general
    connections, counts, _ = fast
    assert counts["malformed"] == {reason: 1}
    assert counts["records"] == 1
    assert [c["line"] for c in connections] == [2]


@pytest.mark.parametrize(("column", "declared", "value"), [
    ("duration", "string", "abc"),
    ("duration", "string", "1.5"),
    ("id.resp_p", "string", "https"),
    ("orig_bytes", "double", "1.5"),
])
def test_tsv_conn_retyped_column_reported(column: str, declared: str, value: str) -> None:
    """The header decides each column's type, so every row of such a header is reported, and none stops the stream."""
    names, types = HEADER[5].split("\t"), HEADER[6].split("\t")
    types[names.index(column)] = declared
    header = HEADER[:6] + ["\t".join(types)]

    general, fast = read_both(header + [row(**{column: value}), row()])

    assert fast == general
    connections, counts, _ = fast
    assert counts["malformed"] == {f"invalid_value:{column}": 2}
    assert connections == []


def test_tsv_conn_negative_bytes_reported() -> None:
    names, types = HEADER[5].split("\t"), HEADER[6].split("\t")
    types[names.index("orig_bytes")] = "int"
    header = HEADER[:6] + ["\t".join(types)]

    general, fast = read_both(header + [row(orig_bytes="-4"), row()])

    assert fast == general
    connections, counts, _ = fast
    assert counts["malformed"] == {"invalid_value:orig_bytes": 1}
    assert [c["line"] for c in connections] == [9]


@pytest.mark.parametrize(("column", "value"), [
    ("id.resp_p", "65536"),
    ("id.orig_p", "99999"),
    ("id.orig_p", "9" * 5000),
    ("duration", "-0.5"),
    ("duration", "-1e-300"),
])
def test_tsv_conn_impossible_port_or_duration_reported(column: str, value: str) -> None:
    """Zeek writes no port above 65535 and no negative duration, so such a row is damaged."""
    general, fast = read_both(HEADER + [row(**{column: value}), row()])

    assert fast == general
    connections, counts, _ = fast
    assert counts["malformed"] == {f"invalid_value:{column}": 1}
    assert [c["line"] for c in connections] == [len(HEADER) + 2]


def test_conn_edge_ports_and_zero_duration_kept() -> None:
    """Ports 0 and 65535 and durations of 0 and -0.0 are values Zeek can write."""
    general, fast = read_both(HEADER + [row(**{"id.orig_p": "0", "id.resp_p": "65535", "duration": "-0.0"}),
                                        row(duration="0")])

    assert fast == general
    connections, counts, _ = fast
    assert counts["malformed"] == {}
    assert [c["remote_port"] for c in connections] == [65535, 443]
