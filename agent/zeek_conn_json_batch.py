"""Add blocks of Zeek JSON ``conn`` lines to per-entity windows without a record per line.

The line path (:func:`agent.zeek_json.parse_json_lines`, then
:func:`agent.network.orient_fields`) builds a flattened record and a connection for each line.
Here every line of a block is parsed with orjson, the nine fields a connection needs are taken
as columns, and each row is checked against the rules of the line path. Rows that pass are
oriented and grouped by (entity, window) with numpy, as TSV blocks are
(:mod:`agent.zeek_conn_batch`).

A row that any check cannot vouch for goes through the line path on its own, between the
rows before and after it. So every line gets the verdict, counts and messages of the line
path, and every window gets the same state in the same order. Such rows are blank lines,
lines orjson rejects, non-objects, nested objects, records of other logs, and any value of a
type or range the block checks do not cover (for example a string port, a negative byte
count or an implausible time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from agent.network import FAILED_CONN_STATES, InternalNetworks, OrientationStats
from agent.zeek_conn import RecordCallback, iter_connections
from agent.zeek_conn_batch import AccumulatorFor, BlockCounts, _orient_and_add, _WindowAdder
from agent.zeek_json import _datetime_from_json
from agent.zeek_records import MalformedLineReporter, ParseStats
from agent.zeek_values import TS_MAX_MICROS, micros_from_float, micros_from_iso8601

__all__ = ["add_json_lines_to_windows"]

# Shorter runs of checked rows between line-path rows are read on the line path too, because
# the per-run numpy work costs more than it saves for a few rows.
_MIN_BLOCK_ROWS = 8

# Ports and byte counts of at least this value take the line path, so the columns fit int64
# and -1 can mark an absent port.
_MAX_INTEGER = 1 << 62

# Plausible times are below 2**32 seconds, where floats are at most 2**-21 s apart. So at most
# one whole microsecond rounds to each float, which makes the vectorised check in _check_times exact.
_TS_MAX_SECS = TS_MAX_MICROS / 1_000_000


def add_json_lines_to_windows(
    texts: list[str],
    first_line: int,
    *,
    source: str,
    default_path: str,
    internal: InternalNetworks,
    stats: ParseStats,
    orientation: OrientationStats,
    reporter: MalformedLineReporter,
    window_seconds: int,
    accumulator_for: AccumulatorFor,
    time_shift_secs: float = 0.0,
    not_before: float | None = None,
    on_other_record: RecordCallback | None = None,
) -> BlockCounts:
    """Add the connections of a block of Zeek JSON lines to their windows and count them.

    Parameters
    ----------
    texts : list of str
        Consecutive lines of one file, without line endings.
    first_line : int
        The 1-based line number of ``texts[0]``.
    source, default_path, internal, stats, orientation, reporter
        As for :func:`agent.zeek_conn.iter_connections`.
    window_seconds, accumulator_for, time_shift_secs, not_before, on_other_record
        As for :func:`agent.zeek_conn_batch.add_tsv_lines_to_windows`.

    Returns
    -------
    BlockCounts
        The connections found, the late ones and the newest connection time.
    """
    adder = _WindowAdder(window_seconds, accumulator_for, not_before)
    objects = _parse_objects(texts)
    rows = _checked_rows(objects, texts, default_path, internal)

    def add_on_line_path(start: int, end: int) -> None:
        numbered = zip(range(first_line + start, first_line + end), texts[start:end])
        for connection in iter_connections(numbered, is_json=True, source=source, default_path=default_path,
                                           internal=internal, stats=stats, orientation=orientation,
                                           reporter=reporter, time_shift_secs=time_shift_secs,
                                           on_other_record=on_other_record):
            adder.add_connection(connection)

    for start, end, checked in _segments(rows.valid):
        if checked:
            _add_rows(rows, start, end, stats, orientation, adder, time_shift_secs)
        else:
            add_on_line_path(start, end)
    return adder.counts


def _parse_objects(texts: list[str]) -> list[Any]:
    """Parse each line with orjson. A line it rejects becomes None, which sends it to the line path."""
    try:
        return list(map(orjson.loads, texts))
    except orjson.JSONDecodeError:
        pass
    objects: list[Any] = []
    for text in texts:
        try:
            objects.append(orjson.loads(text))
        except orjson.JSONDecodeError:
            objects.append(None)
    return objects


class _Rows:
    """The checked columns of a block: plain Python lists, one value per line."""

    def __init__(self, count: int) -> None:
        self.valid = [True] * count
        self.micros: list[int] = [0] * count
        self.orig: list[tuple[str, bool, bool]] = [("", False, False)] * count
        self.resp: list[tuple[str, bool, bool]] = [("", False, False)] * count
        self.orig_p: list[int] = [-1] * count
        self.resp_p: list[int] = [-1] * count
        self.orig_bytes: list[int] = [0] * count
        self.resp_bytes: list[int] = [0] * count
        self.duration: list[float] = [0.0] * count
        self.failed: list[bool] = [False] * count


def _checked_rows(objects: list[Any], texts: list[str], default_path: str,
                  internal: InternalNetworks) -> _Rows:
    """Take the connection's columns of every object and mark the rows the block path cannot vouch for."""
    count = len(objects)
    rows = _Rows(count)
    valid = rows.valid

    # A record of another log, or one whose keys the line path would flatten, takes the line path.
    for index, obj in enumerate(objects):
        if type(obj) is not dict:
            valid[index] = False
            continue
        path = obj.get("_path", None)
        log_path = path if isinstance(path, str) and path else default_path
        if log_path != "conn" or (texts[index].count("{") > 1 and dict in map(type, obj.values())):
            valid[index] = False
    dicts = [obj if ok else {} for obj, ok in zip(objects, valid)]

    def column(name: str) -> list[Any]:
        return [obj.get(name) for obj in dicts]

    _check_times(column("ts"), rows)
    _check_write_times(column("_write_ts"), valid)
    _check_addresses(column("id.orig_h"), rows.orig, valid, internal)
    _check_addresses(column("id.resp_h"), rows.resp, valid, internal)
    _check_integers(column("id.orig_p"), rows.orig_p, valid, absent=-1)
    _check_integers(column("id.resp_p"), rows.resp_p, valid, absent=-1)
    _check_integers(column("orig_bytes"), rows.orig_bytes, valid, absent=0)
    _check_integers(column("resp_bytes"), rows.resp_bytes, valid, absent=0)
    _check_durations(column("duration"), rows.duration, valid)
    _check_states(column("conn_state"), rows.failed, valid)
    return rows


def _check_times(values: list[Any], rows: _Rows) -> None:
    """Store each plausible ``ts`` as epoch microseconds, read as :func:`agent.zeek_json._datetime_from_json` reads it."""
    valid, micros = rows.valid, rows.micros
    floats = [index for index, value in enumerate(values) if type(value) is float and valid[index]]
    if floats:
        # A float whose nearest microsecond reads back as the float itself has that
        # microsecond as its shortest decimal, which is what micros_from_float returns.
        seconds = np.array([values[index] for index in floats], dtype=np.float64)
        in_range = (seconds >= 0) & (seconds < _TS_MAX_SECS)
        candidates = np.rint(np.where(in_range, seconds, 0.0) * 1e6)
        exact = in_range & (candidates / 1e6 == seconds)
        for index, found, is_exact in zip(floats, candidates.astype(np.int64).tolist(), exact.tolist()):
            micros[index] = found if is_exact else _general_micros(values[index])
    for index, value in enumerate(values):
        kind = type(value)
        if not valid[index] or kind is float:
            continue
        if kind is int:
            micros[index] = value * 1000
        elif kind is str:
            micros[index] = _general_micros(value)
        else:
            micros[index] = -1
    for index, found in enumerate(micros):
        if not 0 <= found < TS_MAX_MICROS:
            valid[index] = False


def _general_micros(value: float | str) -> int:
    """Return the microseconds of a float or ISO 8601 time, or -1 when the line path would reject it."""
    try:
        return micros_from_float(value) if type(value) is float else micros_from_iso8601(value)  # type: ignore[arg-type]
    except ValueError:
        return -1


def _check_write_times(values: list[Any], valid: list[bool]) -> None:
    """Mark rows whose ``_write_ts`` the line path would reject, because it converts it too."""
    for index, value in enumerate(values):
        if value is not None and valid[index]:
            try:
                _datetime_from_json(value, check_ts=False)
            except ValueError:
                valid[index] = False


def _check_addresses(values: list[Any], classes: list[tuple[str, bool, bool]], valid: list[bool],
                     internal: InternalNetworks) -> None:
    classified, classify = internal._classified, internal.classify
    for index, value in enumerate(values):
        if type(value) is not str:
            valid[index] = False
            continue
        found = classified.get(value) or classify(value)
        if found is None:
            valid[index] = False
        else:
            classes[index] = found


def _check_integers(values: list[Any], out: list[int], valid: list[bool], *, absent: int) -> None:
    """Store non-negative JSON integers, and ``absent`` for a missing field or null. Other values take the line path."""
    for index, value in enumerate(values):
        if value is None:
            out[index] = absent
        elif type(value) is int and 0 <= value < _MAX_INTEGER:
            out[index] = value
        else:
            valid[index] = False


def _check_durations(values: list[Any], out: list[float], valid: list[bool]) -> None:
    for index, value in enumerate(values):
        kind = type(value)
        if value is None:
            continue
        if kind is float or kind is int:
            try:
                out[index] = float(value or 0.0)
            except OverflowError:
                valid[index] = False
        else:
            valid[index] = False


def _check_states(values: list[Any], out: list[bool], valid: list[bool]) -> None:
    for index, value in enumerate(values):
        if type(value) is str:
            out[index] = value in FAILED_CONN_STATES
        elif value is not None:
            valid[index] = False


def _segments(valid: list[bool]) -> list[tuple[int, int, bool]]:
    """Split rows into runs of checked rows and runs of line-path rows: (start, end, checked)."""
    segments: list[tuple[int, int, bool]] = []
    start = 0
    for index in range(1, len(valid) + 1):
        if index == len(valid) or valid[index] != valid[start]:
            checked = valid[start] and index - start >= _MIN_BLOCK_ROWS
            if segments and segments[-1][2] is False and not checked:
                segments[-1] = (segments[-1][0], index, False)
            else:
                segments.append((start, index, checked))
            start = index
    return segments


def _add_rows(rows: _Rows, start: int, end: int, stats: ParseStats, orientation: OrientationStats,
              adder: _WindowAdder, time_shift_secs: float) -> None:
    """Orient the checked rows from ``start`` to ``end`` and add them to their windows."""
    count = end - start
    stats.records += count
    micros = np.array(rows.micros[start:end], dtype=np.int64)
    ts = micros / 1e6
    if time_shift_secs:
        ts = ts + time_shift_secs

    # Rows refer to addresses by the code of their normalised name.
    name_codes: dict[str, int] = {}
    sides = []
    for classes in (rows.orig[start:end], rows.resp[start:end]):
        codes = np.array([name_codes.setdefault(found[0], len(name_codes)) for found in classes], dtype=np.int64)
        sides.append((codes, np.array([found[1] for found in classes], dtype=bool),
                      np.array([found[2] for found in classes], dtype=bool)))
    names = np.array(list(name_codes), dtype=object)

    integers = {name: np.array(getattr(rows, name)[start:end], dtype=np.int64)
                for name in ("orig_p", "resp_p", "orig_bytes", "resp_bytes")}
    _orient_and_add(ts, sides, integers, np.array(rows.duration[start:end], dtype=np.float64),
                    np.array(rows.failed[start:end], dtype=bool), names, orientation, adder)

