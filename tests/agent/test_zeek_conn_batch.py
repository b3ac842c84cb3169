"""The block path against the conn fast path: same windows, counts and reports, block by block."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import pytest

from agent.features import WindowAccumulator
from agent.network import InternalNetworks, OrientationStats
from agent.zeek_conn import iter_connections
from agent import zeek_conn_batch
from agent.zeek_conn_batch import add_tsv_lines_to_windows
from agent.zeek_records import MalformedLineReporter, ParseStats
from agent.zeek_tsv import TsvHeader
from tests.support.conn_logs import NETWORKS, REAL_CONN_LOGS, read_lines

WINDOW_SECONDS = 60


def windows_both(lines: list[str], *, block_lines: int, shift_secs: float = 0.0,
                 not_before: float | None = None) -> tuple[tuple, tuple]:
    """Fill windows one connection at a time and block by block, and return the state each produced."""
    results = []
    for batch in (False, True):
        internal = InternalNetworks(NETWORKS)
        stats, orientation, header = ParseStats(), OrientationStats(), TsvHeader()
        reporter = MalformedLineReporter("conn.log", stats)
        open_windows: dict[tuple[str, int], WindowAccumulator] = {}
        late, found_connections, newest = 0, 0, []

        def accumulator_for(entity: str, start: int) -> WindowAccumulator:
            found = open_windows.get((entity, start))
            if found is None:
                found = open_windows[(entity, start)] = WindowAccumulator(entity, start)
            return found

        for first in range(0, len(lines), block_lines):
            block = lines[first:first + block_lines]
            if batch:
                block_counts = add_tsv_lines_to_windows(
                    block, first + 1, header=header, source="conn.log", default_path="conn", internal=internal,
                    stats=stats, orientation=orientation, reporter=reporter, window_seconds=WINDOW_SECONDS,
                    accumulator_for=accumulator_for, time_shift_secs=shift_secs, not_before=not_before)
                late += block_counts.late
                found_connections += block_counts.connections
                newest.append(block_counts.newest_ts)
                continue
            block_newest = None
            numbered = enumerate(block, start=first + 1)
            for connection in iter_connections(numbered, is_json=False, source="conn.log", default_path="conn",
                                               internal=internal, stats=stats, orientation=orientation,
                                               reporter=reporter, time_shift_secs=shift_secs, header=header):
                found_connections += 1
                block_newest = connection.ts if block_newest is None else max(block_newest, connection.ts)
                if not_before is not None and connection.ts < not_before:
                    late += 1
                    continue
                start = int(connection.ts // WINDOW_SECONDS) * WINDOW_SECONDS
                accumulator_for(connection.entity, start).add(connection)
            newest.append(block_newest)

        counts = {"records": stats.records, "header_lines": stats.header_lines, "skipped": stats.skipped,
                  "malformed": dict(stats.malformed), "errors": [str(error) for error in stats.errors], "late": late,
                  "connections": found_connections, "newest_by_block": newest}
        windows = {key: _comparable(accumulator) for key, accumulator in open_windows.items()}
        results.append((windows, counts, asdict(orientation)))
    return results[0], results[1]


def _comparable(accumulator: WindowAccumulator) -> dict:
    """The accumulator's fields, with the insertion order of its counters, on which float sums depend."""
    state = asdict(accumulator)
    state["ports"] = list(accumulator.ports.items())
    state["remotes"] = list(accumulator.remotes.items())
    return state


@pytest.mark.parametrize("relative", REAL_CONN_LOGS)
def test_block_path_real_log_matches_fast_path(shared_data_dir: Path, relative: str) -> None:
    lines = read_lines(shared_data_dir / relative, 20000)
    if lines[0].startswith("{"):
        pytest.skip("the block path reads TSV only")

    general, batch = windows_both(lines, block_lines=4096)

    assert batch == general
    assert general[0]


def test_block_path_long_runs_split(shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs longer than the part limit are read in parts, with the windows of one pass."""
    monkeypatch.setattr(zeek_conn_batch, "_MAX_RUN_LINES", 700)
    lines = read_lines(shared_data_dir / "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled", 6000)

    general, batch = windows_both(lines, block_lines=4096)

    assert batch == general
    assert general[1]["records"] > 4096


def test_block_path_shift_matches_fast_path(shared_data_dir: Path) -> None:
    lines = read_lines(shared_data_dir / "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled", 6000)
    middle = float(lines[3000].split("\t")[0]) + 3600.0

    general, batch = windows_both(lines, block_lines=1000, shift_secs=3600.0, not_before=middle)

    assert batch == general
    assert general[1]["late"] > 0


def test_block_path_damaged_lines_match_fast_path(shared_data_dir: Path) -> None:
    """Real rows with one byte replaced, deleted or duplicated, in blocks some of which stay clean."""
    lines = read_lines(shared_data_dir / "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled", 6000)
    generator = random.Random(11)
    damaged = lines[:8]
    for number, text in enumerate(lines[8:]):
        if number % 500 == 0:
            position = generator.randrange(len(text) + 1)
            choice = generator.choice(["replace", "delete", "insert"])
            if choice == "replace":
                text = text[:position] + generator.choice("0-.\tx:T") + text[position + 1:]
            elif choice == "delete":
                text = text[:position] + text[position + 1:]
            else:
                text = text[:position] + text[position:position + 1] + text[position:]
        damaged.append(text)
    damaged[2000:2000] = ["", "#path\tconn", "   "]

    general, batch = windows_both(damaged, block_lines=700)

    assert batch == general
    assert general[1]["malformed"]
    assert general[1]["skipped"] >= 1


@pytest.mark.parametrize(
    "changes",
    [
        {"conn_state": "\\x53\\x30"},
        {"conn_state": "REJ"},
        {"duration": "inf"},
        {"duration": "-", "orig_bytes": "-", "resp_bytes": "-"},
        {"id.resp_p": "-"},
        {"id.orig_h": "40.74.108.7", "id.resp_h": "40.74.108.8"},
        {"id.orig_h": "2001:db8::1"},
        {"id.resp_h": "-"},
        {"ts": "1.655071198444458e+09"},
        {"ts": "5000000000.0"},
        {"local_orig": "-"},
        {"missed_bytes": "12345678901234567890"},
        {"orig_bytes": "999999999999999999", "resp_bytes": "999999999999999999"},
    ],
)
def test_block_path_changed_row_matches_fast_path(shared_data_dir: Path, changes: dict[str, str]) -> None:
    """One row of a real log changed in the named columns, among unchanged rows."""
    lines = read_lines(shared_data_dir / "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled", 400)
    names = next(text for text in lines if text.startswith("#fields")).split("\t")[1:]
    values = dict(zip(names, lines[300].split("\t"))) | changes
    lines[300] = "\t".join(values[name] for name in names)

    general, batch = windows_both(lines, block_lines=200)

    assert batch == general
    assert general[0]
