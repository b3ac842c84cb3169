"""Add blocks of Zeek JSON ``conn`` lines to per-entity windows without a record per line.

The line path (:func:`agent.zeek_json.parse_json_lines`, then
:func:`agent.network.orient_fields`) builds a flattened record and a connection for each line.
Here each line of a block is decoded with msgspec into the twelve fields the checks read, and
each field is taken as a column. msgspec skips every other field without building its value,
which made it about 2.5 times as fast as orjson on the benchmark's conn lines. A block that
msgspec cannot vouch for as a whole is parsed with orjson into dicts instead, and the same
columns are taken from those. Each row is then checked against the rules of the line path.
Rows that pass are oriented and grouped by (entity, window) with numpy, as TSV blocks are
(:mod:`agent.zeek_conn_batch`).

The line path flattens nested objects into dotted keys. Only an object under ``id`` can
become a field the checks read (``{"id": {"orig_h": ...}}`` is ``id.orig_h``), so msgspec reads
``id`` too, and a row with any ``id`` takes the line path. A nested object under another key
flattens into names the checks never read. A field the checks read whose value is an object is
absent to the line path and of the wrong type to the checks, so it takes the line path as well.

msgspec reads a block only when no line is longer than the interpreter's limit on integer
digits. A longer line could contain an integer that msgspec skips in a field it does not read.
:func:`json.loads`, which the line path tries after orjson, fails on such an integer.

msgspec rejects the other lines that the line path treats specially, so their blocks go to
orjson: blank lines, text that is not JSON, values other than objects, NaN, lone UTF-16
surrogate escapes (which the line path replaces and counts), arrays nested deeper than the
recursion limit (1000 by default, below orjson's 1024), and invalid UTF-8 in a field the
checks read. Invalid UTF-8 in another field changes nothing, because the line path reads its
U+FFFD replacement nowhere. msgspec unescapes keys, so ``"\\u0074s"`` is ``ts`` to both, and
both keep the last of duplicate keys.

A row that any check cannot vouch for goes through the line path on its own, between the
rows before and after it. So every line gets the verdict, counts and messages of the line
path, and every window gets the same state in the same order. Such rows are blank lines,
lines orjson rejects, non-objects, objects the line path may flatten and records of other logs. Rows with any
value of a type or range the block checks do not cover go there too, for example a string
port, a negative byte count or an implausible time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import attrgetter, is_, is_not
from typing import Any

import msgspec
import numpy as np
import orjson

from agent.network import FAILED_CONN_STATES, MAX_PORT, InternalNetworks, OrientationStats
from agent.zeek_conn import RecordCallback, decode_lines, iter_connections
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

# orjson reads integers in this range as int and others as float, which msgspec reads as int.
_MIN_ORJSON_INT = -(1 << 63)
_MAX_ORJSON_INT = (1 << 64) - 1

# Used when sys.set_int_max_str_digits(0) lifts the limit on integer digits.
_UNLIMITED_LINE_CHARS = 1 << 62


class _ConnFields(msgspec.Struct, gc=False):
    """The fields of a JSON line that the block checks read, each in its JSON type.

    An absent field is None, because the line path reads absent and null alike for each of them.
    """

    path: Any = msgspec.field(name="_path", default=None)
    ts: Any = None
    write_ts: Any = msgspec.field(name="_write_ts", default=None)
    orig_h: Any = msgspec.field(name="id.orig_h", default=None)
    resp_h: Any = msgspec.field(name="id.resp_h", default=None)
    orig_p: Any = msgspec.field(name="id.orig_p", default=None)
    resp_p: Any = msgspec.field(name="id.resp_p", default=None)
    duration: Any = None
    orig_bytes: Any = None
    resp_bytes: Any = None
    conn_state: Any = None
    # Read only to find rows with an ``id``, which the line path may flatten into address and port fields.
    id: Any = None


_DECODER = msgspec.json.Decoder(_ConnFields)

# The attribute of _ConnFields for each JSON field name.
_ATTRIBUTES = {field: attribute for attribute, field in zip(_ConnFields.__struct_fields__,
                                                             _ConnFields.__struct_encode_fields__)}

Column = Callable[[str], list[Any]]


def add_json_lines_to_windows(
    lines: Sequence[str] | Sequence[bytes],
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
    lines : sequence of str, or sequence of bytes
        Consecutive lines of one file, without line endings. Bytes lines are read as
        :func:`agent.zeek_conn.decode_lines` decodes them, so they must not contain a newline,
        as the tailer frames them.
    first_line : int
        The 1-based line number of ``lines[0]``.
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
    texts: Sequence[str] | None = None if lines and type(lines[0]) is bytes else lines  # type: ignore[assignment]

    # msgspec reads the block when it can vouch for every line, and orjson reads it otherwise.
    decoded = _decode_fields(lines)
    if decoded is not None:
        rows = _checked_rows_of_fields(decoded, default_path, internal)
    else:
        texts = texts if texts is not None else decode_lines(list(lines))  # type: ignore[arg-type]
        rows = _checked_rows_of_objects(_parse_objects(texts), texts, default_path, internal)

    def add_on_line_path(start: int, end: int) -> None:
        selected = texts[start:end] if texts is not None else decode_lines(list(lines[start:end]))  # type: ignore[arg-type]
        numbered = zip(range(first_line + start, first_line + end), selected)
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


def _decode_fields(lines: Sequence[str] | Sequence[bytes]) -> list[_ConnFields] | None:
    """Decode each line with msgspec, or return None when some line needs orjson and the line path's rules."""
    if not lines:
        return []

    # A line no longer than the digit limit cannot contain an integer that json.loads rejects.
    if max(map(len, lines)) > (sys.get_int_max_str_digits() or _UNLIMITED_LINE_CHARS):
        return None

    # ValueError covers invalid UTF-8 in a field that is read, and a str line with a lone surrogate.
    try:
        return list(map(_DECODER.decode, lines))
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None


def _parse_objects(texts: Sequence[str]) -> list[Any]:
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
    """The checked columns of a block, one numpy array per field and one value per line.

    ``valid`` is False for the rows that take the line path. Their other values are placeholders.
    """

    def __init__(self, count: int) -> None:
        self.valid = np.ones(count, dtype=bool)
        self.micros = np.zeros(count, dtype=np.int64)
        self.names: list[str] = []
        self.sides: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.integers: dict[str, np.ndarray] = {}
        self.duration = np.zeros(count, dtype=np.float64)
        self.failed = np.zeros(count, dtype=bool)


def _checked_rows_of_fields(decoded: list[_ConnFields], default_path: str, internal: InternalNetworks) -> _Rows:
    """Take the columns of msgspec's fields and mark the rows the block path cannot vouch for."""
    rows = _Rows(len(decoded))

    def column(name: str) -> list[Any]:
        return list(map(attrgetter(_ATTRIBUTES[name]), decoded))

    # A record of another log takes the line path, which passes it to on_other_record.
    paths = column("_path")
    if default_path != "conn" or any(map(is_not, paths, repeat(None))):
        for index, path in enumerate(paths):
            log_path = path if isinstance(path, str) and path else default_path
            if log_path != "conn":
                rows.valid[index] = False

    # The line path may flatten an "id" object into the address and port fields.
    ids = column("id")
    if any(map(is_not, ids, repeat(None))):
        rows.valid &= np.fromiter(map(is_, ids, repeat(None)), dtype=bool, count=len(ids))

    _check_columns(column, rows, internal, write_times=True)
    return rows


def _checked_rows_of_objects(objects: list[Any], texts: Sequence[str], default_path: str,
                             internal: InternalNetworks) -> _Rows:
    """Take the columns of orjson's objects and mark the rows the block path cannot vouch for."""
    count = len(objects)
    rows = _Rows(count)
    valid = rows.valid

    # A record of another log, or one whose keys the line path would flatten, takes the line path.
    # A nested object needs a second "{" in its line, so one count over the block clears most blocks.
    # Without JSON escapes, a key that no line spells out is absent from every object.
    block = "\n".join(texts)
    unescaped = "\\u" not in block

    def absent_everywhere(name: str) -> bool:
        return unescaped and f'"{name}"' not in block

    all_objects = set(map(type, objects)) == {dict}
    paths_absent = all_objects and (absent_everywhere("_path") or not any(map(is_not, _column(objects, "_path"), repeat(None))))
    if not paths_absent or block.count("{") != count or default_path != "conn":
        for index, obj in enumerate(objects):
            if type(obj) is not dict:
                valid[index] = False
                continue
            path = obj.get("_path", None)
            log_path = path if isinstance(path, str) and path else default_path
            if log_path != "conn" or (texts[index].count("{") > 1 and dict in map(type, obj.values())):
                valid[index] = False
        objects = [obj if ok else {} for obj, ok in zip(objects, valid.tolist())]

    def column(name: str) -> list[Any]:
        return _column(objects, name)

    _check_columns(column, rows, internal, write_times=not absent_everywhere("_write_ts"))
    return rows


def _check_columns(column: Column, rows: _Rows, internal: InternalNetworks, *, write_times: bool) -> None:
    """Check and store the columns of a connection, marking the rows whose values the line path reads otherwise.

    ``write_times`` is False when no row has a ``_write_ts``.
    """
    valid = rows.valid
    _check_times(column("ts"), rows)
    if write_times:
        _check_write_times(column("_write_ts"), valid)
    _check_addresses(column("id.orig_h"), column("id.resp_h"), rows, internal)
    for name, absent, limit in (("id.orig_p", -1, MAX_PORT + 1), ("id.resp_p", -1, MAX_PORT + 1),
                                ("orig_bytes", 0, _MAX_INTEGER), ("resp_bytes", 0, _MAX_INTEGER)):
        rows.integers[name.removeprefix("id.")] = _checked_integers(column(name), valid, absent, limit)
    rows.duration = _checked_durations(column("duration"), valid)
    rows.failed = _checked_states(column("conn_state"), valid)


def _column(objects: list[Any], name: str) -> list[Any]:
    """Return each object's value of ``name``, None where it is absent."""
    return list(map(dict.get, objects, repeat(name)))


def _invalid_where(valid: np.ndarray, values: list[Any], accept: Callable[[Any], bool]) -> None:
    """Mark the rows whose value ``accept`` rejects, one row at a time."""
    for index, value in enumerate(values):
        if not accept(value):
            valid[index] = False


def _check_times(values: list[Any], rows: _Rows) -> None:
    """Store each plausible ``ts`` as epoch microseconds, read as :func:`agent.zeek_json._datetime_from_json` reads it."""
    valid, micros = rows.valid, rows.micros
    is_float: np.ndarray | bool = True
    if set(map(type, values)) == {float}:
        seconds = np.array(values, dtype=np.float64)
    else:
        is_float = np.fromiter((type(value) is float for value in values), dtype=bool, count=len(values))
        seconds = np.array([value if type(value) is float else 0.0 for value in values], dtype=np.float64)

    # A float whose nearest microsecond reads back as the float itself has that
    # microsecond as its shortest decimal, which is what micros_from_float returns.
    in_range = (seconds >= 0) & (seconds < _TS_MAX_SECS)
    candidates = np.rint(np.where(in_range, seconds, 0.0) * 1e6)
    exact = in_range & (candidates / 1e6 == seconds) & is_float
    micros[:] = candidates.astype(np.int64)
    for index in np.flatnonzero(~exact).tolist():
        value = values[index]
        kind = type(value)
        if kind is float or kind is str:
            found = _general_micros(value)
        elif kind is int:
            found = value * 1000
        else:
            found = -1
        if 0 <= found < TS_MAX_MICROS:
            micros[index] = found
        else:
            valid[index] = False


def _general_micros(value: float | str) -> int:
    """Return the microseconds of a float or ISO 8601 time, or -1 when the line path would reject it."""
    try:
        return micros_from_float(value) if type(value) is float else micros_from_iso8601(value)  # type: ignore[arg-type]
    except ValueError:
        return -1


def _check_write_times(values: list[Any], valid: np.ndarray) -> None:
    """Mark rows whose ``_write_ts`` the line path would reject, because it converts it too."""
    if set(map(type, values)) == {type(None)}:
        return

    def accept(value: Any) -> bool:
        if value is None:
            return True
        # orjson, and so the line path, reads an integer beyond 64 bits as a float.
        if type(value) is int and not _MIN_ORJSON_INT <= value <= _MAX_ORJSON_INT:
            return False
        try:
            _datetime_from_json(value, check_ts=False)
        except ValueError:
            return False
        return True
    _invalid_where(valid, values, accept)


def _check_addresses(origs: list[Any], resps: list[Any], rows: _Rows, internal: InternalNetworks) -> None:
    """Classify both address columns by their distinct values and store codes of the normalised names."""
    classified, classify = internal._classified, internal.classify
    try:
        found_values = set(origs).union(resps)
    except TypeError:
        # A JSON array or object is unhashable, and no address either, so it gets code 0 below.
        origs = [value if type(value) is str else None for value in origs]
        resps = [value if type(value) is str else None for value in resps]
        found_values = set(origs).union(resps)
    distinct = [value for value in found_values if type(value) is str]
    classes = [classified.get(text) or classify(text) for text in distinct]
    name_codes: dict[str, int] = {}
    code_of: dict[Any, int] = {}
    internal_flags, shareable_flags = [False], [False]
    for text, found in zip(distinct, classes):
        if found is not None:
            code_of[text] = len(internal_flags)
            name_codes.setdefault(found[0], len(name_codes))
            internal_flags.append(found[1])
            shareable_flags.append(found[2])
    name_of_code = np.array([0] + [name_codes[found[0]] for found in classes if found is not None], dtype=np.int64)
    internal_of_code = np.array(internal_flags, dtype=bool)
    shareable_of_code = np.array(shareable_flags, dtype=bool)

    # Code 0 is a value that is not a valid address string, which takes the line path.
    for values in (origs, resps):
        codes = np.fromiter(map(code_of.get, values, repeat(0)), dtype=np.int64, count=len(values))
        rows.valid &= codes != 0
        rows.sides.append((name_of_code[codes], internal_of_code[codes], shareable_of_code[codes]))
    rows.names = list(name_codes)


def _checked_integers(values: list[Any], valid: np.ndarray, absent: int, limit: int) -> np.ndarray:
    """Return JSON integers from 0 to below ``limit``, and ``absent`` for a missing field or null.

    Other values take the line path. ``limit`` is at most ``_MAX_INTEGER``.
    """
    kinds = set(map(type, values))
    if kinds <= {int, type(None)}:
        filled = values
        if type(None) in kinds:
            filled = [absent if value is None else value for value in values]
        try:
            numbers = np.array(filled, dtype=np.int64)
        except OverflowError:
            pass
        else:
            allowed = numbers >= 0
            # A non-negative ``absent`` passes the check above, so only a negative one needs the nulls found.
            if absent < 0 and type(None) in kinds:
                allowed |= np.fromiter(map(is_, values, repeat(None)), dtype=bool, count=len(values))
            valid &= (numbers < limit) & allowed
            return numbers
    numbers = np.full(len(values), absent, dtype=np.int64)
    for index, value in enumerate(values):
        if value is None:
            continue
        if type(value) is int and 0 <= value < limit:
            numbers[index] = value
        else:
            valid[index] = False
    return numbers


def _checked_durations(values: list[Any], valid: np.ndarray) -> np.ndarray:
    """Return the durations as the line path's ``float(value or 0.0)`` reads them. Other types take the line path."""
    kinds = set(map(type, values))
    if kinds <= {float, int, type(None)}:
        filled = values
        if type(None) in kinds:
            filled = [0.0 if value is None else value for value in values]
        try:
            # Adding 0.0 turns -0.0 into 0.0, as ``value or 0.0`` does.
            durations = np.array(filled, dtype=np.float64) + 0.0
        except OverflowError:
            pass
        else:
            # The line path reports an infinite or negative duration. -0.0 is not negative.
            valid &= np.isfinite(durations) & (durations >= 0.0)
            return durations
    durations = np.zeros(len(values), dtype=np.float64)
    for index, value in enumerate(values):
        kind = type(value)
        if value is None:
            continue
        if kind is float or kind is int:
            try:
                durations[index] = float(value or 0.0)
            except OverflowError:
                valid[index] = False
            else:
                valid[index] &= bool(np.isfinite(durations[index])) and durations[index] >= 0.0
        else:
            valid[index] = False
    return durations


def _checked_states(values: list[Any], valid: np.ndarray) -> np.ndarray:
    """Return whether each ``conn_state`` is a failed state. Values other than strings and null take the line path."""
    if not set(map(type, values)) <= {str, type(None)}:
        _invalid_where(valid, values, lambda value: value is None or type(value) is str)
        values = [value if type(value) is str else None for value in values]
    return np.fromiter(map(FAILED_CONN_STATES.__contains__, values), dtype=bool, count=len(values))


def _segments(valid_rows: np.ndarray) -> list[tuple[int, int, bool]]:
    """Split rows into runs of checked rows and runs of line-path rows: (start, end, checked)."""
    if valid_rows.all() and len(valid_rows) >= _MIN_BLOCK_ROWS:
        return [(0, len(valid_rows), True)]
    valid = valid_rows.tolist()
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
    stats.records += end - start
    ts = rows.micros[start:end] / 1e6
    if time_shift_secs:
        ts = ts + time_shift_secs
    sides = [tuple(array[start:end] for array in side) for side in rows.sides]
    integers = {name: array[start:end] for name, array in rows.integers.items()}
    _orient_and_add(ts, sides, integers, rows.duration[start:end], rows.failed[start:end],
                    np.array(rows.names, dtype=object), orientation, adder)
