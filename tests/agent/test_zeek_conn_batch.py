"""The block path against the conn fast path: same windows, counts and reports, block by block."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    """The accumulator's fields, with the insertion order of its counters, on which float sums depend.

    The duration sum is compared by its repr, which distinguishes every double and makes NaN equal to itself.
    """
    state = asdict(accumulator)
    state["duration_sum"] = repr(accumulator.duration_sum)
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
        {"id.resp_p": "65536"},
        {"id.orig_p": "65535", "id.resp_p": "0"},
        {"duration": "-0.5"},
        {"duration": "-0.0"},
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


# Values of the columns the checks read: the forms Zeek writes, and forms of damaged or foreign
# lines that some check must reject or that Python's own rules read differently.
DECIMALS = st.one_of(
    st.from_regex(r"[0-9]{1,12}(\.[0-9]{0,9})?", fullmatch=True),
    st.decimals(min_value=0, max_value=10**11, places=6, allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["-", "", "(empty)", ".5", "5.", "0.", "00001655071198.444458", "1655071198.4444589",
                     "1.655071198444458e+09", "9007199254740993", "9007199254740993.5", "123456789012345678.9",
                     "1234567890123456789", "0.1234567890123456789", "inf", "nan", "-1.5", "+1.5", " 1.5", "1.5 ",
                     "1_000.5", "\u0661.\u0665", "1..5", "1.5.", "0x10", "1e5", "5000000000.0"]),
)
DIGITS = st.one_of(
    st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    st.sampled_from(["-", "", "(empty)", "0080", "\u0661\u0662", "+5", "-1", " 5", "5 ", "0x1F", "1.0", "5\u00e9",
                     "9" * 18, "9" * 19, "1" + "0" * 70, "65535", "65536", "99999"]),
)
ADDRESSES = st.sampled_from([
    "147.32.81.167", "147.32.81.12", "40.74.108.123", "8.8.8.8", "10.0.0.1", "147.032.081.167",
    "::ffff:147.32.81.167", "2001:db8::1", "2001:DB8::1", "2001:db8:0::1", "fe80::1%eth0", "fe80::1%" + "x" * 80,
    "999.1.1.1", "1.2.3.4\x00", "\u00e9.1.1.1", "-", "", "(empty)", "not an address",
])
STATES = st.sampled_from(["S0", "SF", "REJ", "OTH", "RSTO", "\\x53\\x30", "\\x52EJ", "S0 ", "s0", "\\\\", "\\x", "-",
                          "", "(empty)", "\u00e9", "S\ufffd"])
BOOLS = st.sampled_from(["T", "F", "-", "", "t", "TRUE", "(empty)"])
OTHER_TEXTS = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"), max_size=8)
COLUMN_VALUES = {"ts": DECIMALS, "duration": DECIMALS, "id.orig_p": DIGITS, "id.resp_p": DIGITS,
                 "orig_bytes": DIGITS, "resp_bytes": DIGITS, "missed_bytes": DIGITS, "orig_pkts": DIGITS,
                 "id.orig_h": ADDRESSES, "id.resp_h": ADDRESSES, "conn_state": STATES, "local_orig": BOOLS,
                 "history": OTHER_TEXTS, "service": OTHER_TEXTS}


def real_rows(shared_data_dir: Path) -> tuple[list[str], list[str], list[list[str]]]:
    """Return the header lines, column names and split data rows of a real conn log's start."""
    lines = read_lines(shared_data_dir / "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled", 300)
    header = [text for text in lines if text.startswith("#") and not text.startswith("#close")]
    names = next(text for text in header if text.startswith("#fields")).split("\t")[1:]
    rows = [text.split("\t") for text in lines if text and not text.startswith("#")]
    return header, names, rows


@st.composite
def hostile_rows(draw: st.DrawFn, rows: list[list[str]], names: list[str]) -> list[str]:
    """Draw real rows, some with hostile values in a few columns, some with a column too many or too few."""
    lines = []
    for _ in range(draw(st.integers(min_value=1, max_value=60))):
        values = list(draw(st.sampled_from(rows)))
        for name in draw(st.lists(st.sampled_from(sorted(COLUMN_VALUES)), max_size=3)):
            values[names.index(name)] = draw(COLUMN_VALUES[name])
        change = draw(st.sampled_from(["none"] * 8 + ["drop", "add"]))
        if change == "drop":
            del values[draw(st.integers(min_value=0, max_value=len(values) - 1))]
        elif change == "add":
            values.append(draw(OTHER_TEXTS))
        lines.append("\t".join(values))
    return lines


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_block_path_hostile_rows_match_fast_path(shared_data_dir: Path, data: st.DataObject) -> None:
    """Real rows with hostile values, in blocks of any size, give the windows of the fast path."""
    header, names, rows = real_rows(shared_data_dir)

    block = header + data.draw(hostile_rows(rows, names))
    general, batch = windows_both(block, block_lines=data.draw(st.integers(min_value=1, max_value=len(block))))

    assert batch == general


# Values the fast path accepts although Zeek would not write them so, each read by the rule of
# its column: Python's float for durations, digits for counts, ipaddress for addresses.
ODD_VALID_VALUES = {
    "ts": st.one_of(st.from_regex(r"1[0-9]{9}(\.[0-9]{0,6})?", fullmatch=True),
                    st.sampled_from(["0001655071198.444458", "1655071198.", "1655071198", "0.000001"])),
    "duration": st.one_of(DECIMALS.filter(lambda text: text == "-" or _is_duration(text)),
                          st.sampled_from(["1e5", " 1.5", "1_000.5", "\u0661.\u0665", "-0.0", "9" * 30])),
    "id.orig_p": st.sampled_from(["0", "0080", "65535", "-", "0" * 13 + "65535"]),
    "orig_bytes": st.one_of(st.from_regex(r"[0-9]{1,18}", fullmatch=True), st.just("-")),
    "resp_bytes": st.sampled_from(["0", "-", "000000000000000001", "999999999999999999"]),
    "missed_bytes": st.one_of(st.from_regex(r"[0-9]{1,40}", fullmatch=True), st.just("-")),
    "id.resp_h": st.sampled_from(["40.74.108.123", "2001:db8::1", "2001:DB8:0::1", "::ffff:8.8.8.8",
                                  "fe80::1%eth0", "fe80::1%" + "x" * 80]),
    "conn_state": st.one_of(STATES, OTHER_TEXTS),
    "local_orig": st.sampled_from(["T", "F", "-"]),
    "history": OTHER_TEXTS,
}


def _is_duration(text: str) -> bool:
    """Return whether ``text`` reads as a finite float that is not negative, as a duration must."""
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value >= 0.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_block_path_odd_valid_rows_stay_in_blocks(shared_data_dir: Path, data: st.DataObject) -> None:
    """Rows with odd values that every check accepts are read as blocks, with the windows of the fast path."""
    header, names, rows = real_rows(shared_data_dir)
    block = list(header)
    for _ in range(data.draw(st.integers(min_value=1, max_value=60))):
        values = list(data.draw(st.sampled_from(rows)))
        for name in data.draw(st.lists(st.sampled_from(sorted(ODD_VALID_VALUES)), max_size=3)):
            values[names.index(name)] = data.draw(ODD_VALID_VALUES[name])
        block.append("\t".join(values))
    line_path_texts: list[str] = []

    def record_line_path(numbered: Iterable[tuple[int, str]], **options: Any) -> Iterator[Any]:
        numbered = list(numbered)
        line_path_texts.extend(text for _, text in numbered)
        return iter_connections(numbered, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zeek_conn_batch, "iter_connections", record_line_path)
        general, batch = windows_both(block, block_lines=len(block))

    assert batch == general
    assert line_path_texts == header
