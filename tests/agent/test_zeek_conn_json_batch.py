"""The JSON block path against the JSON line path: same windows, counts and reports, block by block."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from agent.features import WindowAccumulator
from agent.network import InternalNetworks, OrientationStats
from agent.zeek_conn import iter_connections
from agent.zeek_conn_json_batch import add_json_lines_to_windows
from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from tests.support.conn_logs import NETWORKS, REAL_CONN_LOGS, read_lines

WINDOW_SECONDS = 60
JSON_CONN_LOG = "stratosphere-testing/002-zeek-scenario-port-scanning/conn.log"


def windows_both(lines: list[str], *, block_lines: int, shift_secs: float = 0.0, not_before: float | None = None,
                 default_path: str = "conn") -> tuple[tuple, tuple]:
    """Fill windows one connection at a time and block by block, and return the state each produced."""
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
            numbered = enumerate(block, start=first + 1)
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


@pytest.mark.parametrize("relative", REAL_CONN_LOGS)
def test_json_block_real_log_matches_line_path(shared_data_dir: Path, relative: str) -> None:
    lines = read_lines(shared_data_dir / relative, 20000)
    if not lines[0].startswith("{"):
        pytest.skip("a TSV log")

    general, batch = windows_both(lines, block_lines=1000)

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
