"""The JSON block path against the JSON line path: same windows, counts and reports, block by block."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.features import WindowAccumulator
from agent.network import InternalNetworks, OrientationStats
from agent.zeek_conn import decode_lines, iter_connections
from agent.zeek_conn_json_batch import _decode_fields, add_json_lines_to_windows
from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from tests.support.conn_logs import NETWORKS, REAL_CONN_LOGS, read_lines

WINDOW_SECONDS = 60
JSON_CONN_LOG = "stratosphere-testing/002-zeek-scenario-port-scanning/conn.log"


def windows_both(lines: list[str] | list[bytes], *, block_lines: int, shift_secs: float = 0.0,
                 not_before: float | None = None, default_path: str = "conn") -> tuple[tuple, tuple]:
    """Fill windows one connection at a time and block by block, and return the state each produced.

    The block path gets ``lines`` as they are, and the line path gets them as the agent decodes bytes.
    """
    texts = decode_lines(lines) if lines and isinstance(lines[0], bytes) else lines  # type: ignore[arg-type]
    assert len(texts) == len(lines)
    results = []
    for batch in (False, True):
        internal = InternalNetworks(NETWORKS)
        stats, orientation = ParseStats(), OrientationStats()
        reporter = MalformedLineReporter("conn.log", stats)
        open_windows: dict[tuple[str, int], WindowAccumulator] = {}
        others: list[ZeekRecord] = []
        late, found_connections, newest = 0, 0, []

        def accumulator_for(entity: str, start: int) -> WindowAccumulator:
            found = open_windows.get((entity, start))
            if found is None:
                found = open_windows[(entity, start)] = WindowAccumulator(entity, start)
            return found

        for first in range(0, len(lines), block_lines):
            block = lines[first:first + block_lines]
            if batch:
                block_counts = add_json_lines_to_windows(
                    block, first + 1, source="conn.log", default_path=default_path, internal=internal,
                    stats=stats, orientation=orientation, reporter=reporter, window_seconds=WINDOW_SECONDS,
                    accumulator_for=accumulator_for, time_shift_secs=shift_secs, not_before=not_before,
                    on_other_record=others.append)
                late += block_counts.late
                found_connections += block_counts.connections
                newest.append(block_counts.newest_ts)
                continue
            block_newest = None
            numbered = enumerate(texts[first:first + block_lines], start=first + 1)
            for connection in iter_connections(numbered, is_json=True, source="conn.log", default_path=default_path,
                                               internal=internal, stats=stats, orientation=orientation,
                                               reporter=reporter, time_shift_secs=shift_secs,
                                               on_other_record=others.append):
                found_connections += 1
                block_newest = connection.ts if block_newest is None else max(block_newest, connection.ts)
                if not_before is not None and connection.ts < not_before:
                    late += 1
                    continue
                start = int(connection.ts // WINDOW_SECONDS) * WINDOW_SECONDS
                accumulator_for(connection.entity, start).add(connection)
            newest.append(block_newest)

        counts = {"records": stats.records, "malformed_total": stats.malformed_total, "skipped": stats.skipped, "invalid_utf8": stats.invalid_utf8,
                  "malformed": dict(stats.malformed), "errors": [str(error) for error in stats.errors],
                  "late": late, "connections": found_connections, "newest_by_block": newest,
                  "others": [(record.log_path, record.line, sorted(record.fields)) for record in others]}
        windows = {key: _comparable(accumulator) for key, accumulator in open_windows.items()}
        results.append((windows, counts, asdict(orientation)))
    return results[0], results[1]


def _comparable(accumulator: WindowAccumulator) -> dict:
    """The accumulator's fields, with the insertion order of its counters, on which float sums depend."""
    state = asdict(accumulator)
    state["ports"] = list(accumulator.ports.items())
    state["remotes"] = list(accumulator.remotes.items())
    return state


def json_lines(shared_data_dir: Path, limit: int = 4600) -> list[str]:
    return [text for text in read_lines(shared_data_dir / JSON_CONN_LOG, limit) if text]


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
@pytest.mark.parametrize("relative", REAL_CONN_LOGS)
def test_json_block_real_log_matches_line_path(shared_data_dir: Path, relative: str, as_bytes: bool) -> None:
    lines = read_lines(shared_data_dir / relative, 20000)
    if not lines[0].startswith("{"):
        pytest.skip("a TSV log")

    general, batch = windows_both([text.encode() for text in lines] if as_bytes else lines, block_lines=1000)

    assert batch == general
    assert general[0]
    assert general[2]["connections"] > 0


def test_json_block_shift_matches_line_path(shared_data_dir: Path) -> None:
    lines = json_lines(shared_data_dir)
    middle = json.loads(lines[2000])["ts"] + 3600.0

    general, batch = windows_both(lines, block_lines=700, shift_secs=3600.0, not_before=middle)

    assert batch == general
    assert general[1]["late"] > 0
    assert general[1]["late"] < general[1]["connections"]


def test_json_block_damaged_lines_match_line_path(shared_data_dir: Path) -> None:
    """Real rows with one character replaced, deleted or duplicated, in blocks some of which stay clean."""
    lines = json_lines(shared_data_dir)
    generator = random.Random(7)
    damaged = lines[:8]
    for number, text in enumerate(lines[8:]):
        if number % 97 == 0:
            position = generator.randrange(len(text) + 1)
            choice = generator.choice(["replace", "delete", "insert"])
            if choice == "replace":
                text = text[:position] + generator.choice('0-.,:"{}[]x e') + text[position + 1:]
            elif choice == "delete":
                text = text[:position] + text[position + 1:]
            else:
                text = text[:position] + text[position:position + 1] + text[position:]
        damaged.append(text)
    damaged[2000:2000] = ["", "   ", "[1, 2]", '{"a": [1', '2]}', "NaN", '{"ts": NaN}', '"text"']

    general, batch = windows_both(damaged, block_lines=700)

    assert batch == general
    assert general[1]["malformed"]["invalid_json"] > 5
    assert general[1]["malformed"]["not_json_object"] >= 2
    assert general[1]["skipped"] == 2


@pytest.mark.parametrize(
    "changes",
    [
        {"ts": 1664462456755},
        {"ts": "2022-09-29T14:40:56.755299Z"},
        {"ts": "yesterday"},
        {"ts": -1.5},
        {"ts": 5000000000.0},
        {"ts": 1664462456.7552991},
        {"ts": 1664462456.0},
        {"ts": 1.664462456e9},
        {"ts": True},
        {"ts": None},
        {"ts": [1664462456.1]},
        {"_write_ts": 1664462457.5},
        {"_write_ts": "not a time"},
        {"_path": "dns"},
        {"_path": ""},
        {"_path": 5},
        {"_path": "conn"},
        {"_path": ["conn"]},
        {"_path": None},
        {"id.orig_h": "40.74.108.7", "id.resp_h": "40.74.108.8"},
        {"id.orig_h": "2001:db8::1"},
        {"id.orig_h": "::ffff:172.16.1.11"},
        {"id.resp_h": "not an address"},
        {"id.resp_h": 2886729995},
        {"id.resp_h": None},
        {"id.orig_h": []},
        {"id.resp_h": ["8.8.8.8"]},
        {"id.resp_h": {"a": 1}},
        {"id.resp_p": "53"},
        {"id.resp_p": -5},
        {"id.resp_p": -1},
        {"id.orig_p": -1, "id.resp_p": None},
        {"id.resp_p": None},
        {"id.orig_p": 2.5, "id.resp_p": 0},
        {"orig_bytes": None, "resp_bytes": False},
        {"orig_bytes": -3},
        {"orig_bytes": 1.5},
        {"orig_bytes": 18446744073709551615, "resp_bytes": 9223372036854775807},
        {"duration": None},
        {"duration": 3},
        {"duration": -0.0},
        {"duration": "1.25"},
        {"duration": -0.5},
        {"id.resp_p": 65536},
        {"id.orig_p": 65535, "id.resp_p": 0},
        {"conn_state": "REJ"},
        {"conn_state": 5},
        {"conn_state": None},
        {"service": {"name": "dns"}},
        {"id": {"orig_h": "8.8.4.4"}},
        {"history": "{x}"},
        {"note": "\ud83d\ude00"},
    ],
)
def test_json_block_changed_row_matches_line_path(shared_data_dir: Path, changes: dict[str, Any]) -> None:
    """One row of a real log changed in the named fields, among unchanged rows."""
    lines = json_lines(shared_data_dir, 400)
    values = json.loads(lines[300]) | changes
    lines[300] = json.dumps(values)

    general, batch = windows_both(lines, block_lines=200)

    assert batch == general
    assert general[0]


@pytest.mark.parametrize(
    "changes",
    [
        {"ts": "yesterday"},
        {"orig_bytes": -3},
        {"id.resp_h": None},
        {"id.orig_h": "40.74.108.7", "id.resp_h": "40.74.108.8"},
    ],
)
def test_json_block_missing_fields_every_row(shared_data_dir: Path, changes: dict[str, Any]) -> None:
    """Every row changed alike, so that whole blocks take the line path or count external pairs."""
    lines = [json.dumps(json.loads(text) | changes) for text in json_lines(shared_data_dir, 300)]

    general, batch = windows_both(lines, block_lines=100)

    assert batch == general


def test_json_block_lone_surrogate_matches_line_path(shared_data_dir: Path) -> None:
    """A lone surrogate escape, which orjson rejects, is read and counted as the line path does."""
    lines = json_lines(shared_data_dir, 100)
    lines[50] = lines[50][:-1] + ', "note": "\\ud800x"}'

    general, batch = windows_both(lines, block_lines=100)

    assert batch == general
    assert general[1]["invalid_utf8"] == 1


def test_json_block_other_default_path(shared_data_dir: Path) -> None:
    """A file named for another log has no conn rows unless a row's _path is conn."""
    lines = json_lines(shared_data_dir, 200)
    lines[20:40] = [json.dumps(json.loads(text) | {"_path": "conn"}) for text in lines[20:40]]

    general, batch = windows_both(lines, block_lines=100, default_path="dns")

    assert batch == general
    assert general[2]["connections"] == 20
    assert len(general[1]["others"]) == 180


def test_json_block_streaming_fields(shared_data_dir: Path) -> None:
    """Rows as json-streaming-logs writes them: _path and _write_ts on every row, one _write_ts invalid."""
    lines = json_lines(shared_data_dir, 300)
    rows = [json.loads(text) for text in lines]
    lines = [json.dumps({"_path": "conn", "_write_ts": row["ts"] + 1.0} | row) for row in rows]
    lines[120] = json.dumps({"_path": "conn", "_write_ts": [1]} | rows[120])

    general, batch = windows_both(lines, block_lines=100)

    assert batch == general
    assert general[1]["malformed"] == {"invalid_value:_write_ts": 1}
    assert general[1]["records"] == 299


@pytest.mark.parametrize("key, value", [("_path", "dns"), ("_write_ts", "not a time"), ("ts", "yesterday")])
def test_json_block_escaped_key_matches_line_path(shared_data_dir: Path, key: str, value: str) -> None:
    """A key spelled with a JSON escape (\\u005f for the underscore, \\u0074 for t) is the same key."""
    lines = json_lines(shared_data_dir, 300)
    escaped = key.replace("_", "\\u005f") if "_" in key else "\\u0074s"
    lines[150] = lines[150][:-1] + f', "{escaped}": "{value}"}}'

    general, batch = windows_both(lines, block_lines=300)

    assert batch == general
    assert general[1]["records"] + general[1]["malformed_total"] == 300


def test_json_block_clean_lines_decoded_by_msgspec(shared_data_dir: Path) -> None:
    """Real lines take msgspec, as text and as bytes. Lines it cannot vouch for send the block to orjson.

    A nested ``id`` object is read, so that its row takes the line path.
    """
    lines = json_lines(shared_data_dir, 50)
    nested = lines[:10] + [lines[10][:-1] + ', "id": {"orig_h": "8.8.4.4"}}']
    brace_in_string = lines[:10] + [lines[10][:-1] + ', "history": "{x}"}']
    huge_integer = lines[:10] + [lines[10][:-1] + f', "missed_bytes": {"7" * (sys.get_int_max_str_digits() + 1)}}}']

    text_fields = _decode_fields(lines)
    bytes_fields = _decode_fields([text.encode() for text in lines])

    assert text_fields is not None
    assert bytes_fields == text_fields
    assert text_fields[0].ts == json.loads(lines[0])["ts"]
    assert text_fields[0].orig_h == json.loads(lines[0])["id.orig_h"]
    assert _decode_fields(nested)[10].id == {"orig_h": "8.8.4.4"}  # type: ignore[index]
    assert _decode_fields(brace_in_string)[10].id is None  # type: ignore[index]
    assert _decode_fields(huge_integer) is None
    assert _decode_fields(lines[:10] + [""]) is None
    assert _decode_fields(lines[:10] + ['{"ts": NaN}']) is None
    assert _decode_fields(lines[:10] + ['{"note": "\\ud800"}']) is None
    assert _decode_fields([]) == []


# Values of the fields the checks read that Zeek writes, or that a damaged or foreign line holds.
PLAUSIBLE_TS = st.floats(min_value=1.5e9, max_value=1.8e9, allow_nan=False)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "ts": st.one_of(PLAUSIBLE_TS, st.integers(min_value=-10, max_value=1 << 66), st.floats(allow_nan=False),
                    st.sampled_from(["2022-09-29T14:40:56.755299Z", "2022-09-29T14:40:56+01:00", "yesterday", ""])),
    "_write_ts": st.one_of(PLAUSIBLE_TS, st.integers(min_value=-(1 << 66), max_value=1 << 66),
                           st.sampled_from(["2022-09-29T14:40:57Z", "later"])),
    "_path": st.sampled_from(["conn", "dns", "", "Conn"]),
    "id.orig_h": st.sampled_from(["172.16.1.11", "147.32.83.1", "8.8.8.8", "::ffff:172.16.1.11", "2001:db8::1",
                                  "fe80::1", "172.16.1.011", "not an address", "", 2886729995]),
    "id.resp_h": st.sampled_from(["8.8.8.8", "172.16.1.12", "40.74.108.7", "64:ff9b::808:808", "::", "999.1.1.1"]),
    "id.orig_p": st.integers(min_value=-(1 << 65), max_value=1 << 65),
    "id.resp_p": st.one_of(st.integers(min_value=-2, max_value=65536), st.sampled_from(["53", 53.0])),
    "orig_bytes": st.integers(min_value=-(1 << 64), max_value=1 << 64),
    "resp_bytes": st.one_of(st.integers(min_value=-2, max_value=1 << 63), st.floats(allow_nan=False)),
    "duration": st.one_of(st.floats(allow_nan=False), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                          st.just("1.5")),
    "conn_state": st.sampled_from(["S0", "REJ", "SF", "SH", "OTH", "RSTO", "", "S0 "]),
}
# Any JSON value in any field: the line path reports what a connection cannot take.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6))
CONTAINERS = st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))
OTHER_VALUES = {name: st.one_of(SCALARS, CONTAINERS) for name in
                ("ts", "_write_ts", "_path", "id.orig_h", "id.resp_h", "id.orig_p", "id.resp_p", "conn_state",
                 "duration", "orig_bytes", "resp_bytes")}

# Changes to a line's text that the line path treats specially, each applied to an encoded row.
TEXT_CHANGES: list[Callable[[str], str]] = [
    lambda text: text.replace('"ts"', '"\\u0074s"', 1),
    lambda text: text.replace('"id.orig_h"', '"id\\u002eorig_h"', 1),
    lambda text: text[:-1] + ', "ts": "2022-09-29T14:40:56Z"}',
    lambda text: '{"conn_state": "REJ", ' + text[1:],
    lambda text: text[:-1] + ', "_path": "dns"}',
    lambda text: text[:-1] + ', "id": {"orig_h": "8.8.4.4"}}',
    lambda text: text[:-1] + ', "x": {}}',
    lambda text: '{"id": {"resp_p": 22}, ' + text[1:],
    lambda text: text[:-1] + ', "\\u0069d": {"orig_h": "10.0.0.9"}}',
    lambda text: text[:-1] + ', "id": 5}',
    lambda text: text[:-1] + ', "_write_ts": {"a": 1}}',
    lambda text: text[:-1] + ', "x": ' + '{"a": ' * 1100 + "1" + "}" * 1100 + "}",
    lambda text: text[:-1] + ', "history": "{x}"}',
    lambda text: text[:-1] + ', "note": "\\ud800"}',
    lambda text: text[:-1] + ', "note": "\\ud83d\\ude00\\u0000"}',
    lambda text: text[:-1] + ', "x": ' + "[" * 1100 + "]" * 1100 + "}",
    lambda text: text[:-1] + ', "x": ' + "[" * 900 + "]" * 900 + "}",
    lambda text: text[:-1] + ', "x": ' + "9" * 400 + "}",
    lambda text: text[:-1] + ', "x": ' + "9" * (sys.get_int_max_str_digits() + 1) + "}",
    lambda text: text[:-1] + ', "x": 1e400}',
    lambda text: text[:-1] + ', "duration": 1e400}',
    lambda text: text[:-1] + ', "duration": -Infinity}',
    lambda text: text[:-1] + ', "x": NaN}',
    lambda text: text.replace(":", ": ", 3) + " \t",
    lambda text: " " + text + "\r",
    lambda text: text + "x",
    lambda text: text + " {}",
    lambda text: text[: len(text) // 2],
    lambda text: "",
    lambda text: "   ",
    lambda text: "[1, 2]",
    lambda text: '"text"',
]

# Changes to a line's bytes: invalid UTF-8 in a field the checks skip, in one they read, and outside strings.
BYTES_CHANGES: list[Callable[[bytes], bytes]] = [
    lambda line: line[:-1] + b', "note": "\xff\xe2\x80"}',
    lambda line: line[:-1] + b', "n\xffote": 1}',
    lambda line: line.replace(b'"conn_state":"', b'"conn_state":"\xc3', 1),
    lambda line: line[:-1] + b', "x": 1\xff}',
    lambda line: line + b"\r",
]


@st.composite
def hostile_blocks(draw: st.DrawFn, rows: list[dict[str, Any]], *, as_bytes: bool) -> list[str] | list[bytes]:
    """Draw real rows, some with changed values and some with changed text, as JSON lines."""
    lines: list[Any] = []
    for _ in range(draw(st.integers(min_value=1, max_value=40))):
        row = dict(draw(st.sampled_from(rows)))
        for name in draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=2)):
            row[name] = draw(st.one_of(FIELD_VALUES[name], OTHER_VALUES[name]))
        if draw(st.booleans()):
            row.pop(draw(st.sampled_from(sorted(row))))
        text = json.dumps(row, ensure_ascii=draw(st.booleans()), separators=(",", ":"))
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            text = draw(st.sampled_from(TEXT_CHANGES))(text)
        if not as_bytes:
            lines.append(text)
            continue
        line = text.encode("utf-8", "surrogatepass")
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            line = draw(st.sampled_from(BYTES_CHANGES))(line)
        lines.append(line)
    return lines


@pytest.fixture(scope="module")
def base_rows(shared_data_dir: Path) -> list[dict[str, Any]]:
    """Real rows of outbound, inbound, failed and external connections."""
    rows = [json.loads(text) for text in json_lines(shared_data_dir, 400)]
    rows.append(rows[0] | {"id.orig_h": "40.74.108.7", "id.resp_h": "172.16.1.11"})
    rows.append(rows[1] | {"id.orig_h": "40.74.108.7", "id.resp_h": "40.74.108.8"})
    return rows[::10]


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_json_block_hostile_lines_match_line_path(base_rows: list[dict[str, Any]], as_bytes: bool,
                                                  data: st.DataObject) -> None:
    """Blocks of real rows with hostile values and text: the block path reads them as the line path does."""
    lines = data.draw(hostile_blocks(base_rows, as_bytes=as_bytes))
    block_lines = data.draw(st.integers(min_value=1, max_value=40))
    default_path = data.draw(st.sampled_from(["conn", "conn", "dns"]))
    shift_secs = data.draw(st.sampled_from([0.0, 3600.0]))

    general, batch = windows_both(lines, block_lines=block_lines, default_path=default_path, shift_secs=shift_secs,
                                  not_before=1664462456.8 + shift_secs)

    assert batch[0] == general[0]
    assert batch[1] == general[1]
    assert batch[2] == general[2]
