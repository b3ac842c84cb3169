"""Add blocks of Zeek TSV ``conn`` lines to per-entity windows without a connection per line.

:mod:`agent.zeek_conn` builds one :class:`agent.network.Connection` per line, and the window
accumulator then reads it back. Here a run of data lines is encoded once and split into
columns by :mod:`agent.zeek_tsv_bytes`, and every check of the conn fast path is made on
whole columns of bytes. Rows are oriented and grouped by (entity, window) with numpy, and
each group is added to its accumulator with a few list and ``Counter`` calls.

A run that any check rejects, header lines and blank lines go through
:func:`agent.zeek_conn.iter_connections` instead, one connection at a time. Every check is the
fast path's own rule, so each line gets the verdict, counts and messages it gets there, and
every window gets the same state: groups keep line order, and sums are taken in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from functools import reduce
from operator import add

import numpy as np

try:
    # The C tally behind Counter.update. It is private to collections, hence the fallback.
    from collections import _count_elements  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - every CPython since 3.2 has it
    def _count_elements(mapping: MutableMapping[object, int], iterable: Iterable[object]) -> None:
        get = mapping.get
        for element in iterable:
            mapping[element] = get(element, 0) + 1

from agent.features import WindowAccumulator
from agent.network import FAILED_CONN_STATES, MAX_PORT, Connection, InternalNetworks, OrientationStats
from agent.zeek_conn import _PLAIN_SECONDS, _TS_MAX_SECS, RecordCallback, _ConnPlan, _plan, iter_connections
from agent.zeek_records import MalformedLineReporter, ParseStats
from agent.zeek_tsv import TsvHeader
from agent.zeek_tsv_bytes import TsvRunBytes, split_run
from agent.zeek_values import unescape

__all__ = ["BlockCounts", "add_tsv_lines_to_windows"]

# Zeek writes times with six decimals. A time with more takes the line path, as in _PLAIN_SECONDS.
_MAX_TS_DECIMALS = 6

# The most decimals of a duration that plain_decimals converts. It converts any number
# exactly while the digits fit, so the bound is only the digit limit.
_MAX_DURATION_DECIMALS = 18

# Longer runs of data lines are read in parts of this many lines, which bounds the memory of
# a part's bytes, position arrays and group lists: 17 MiB at the peak for 23-column conn lines
# (tracemalloc, one part of real lines).
_MAX_RUN_LINES = 1 << 14

AccumulatorFor = Callable[[str, int], WindowAccumulator]


@dataclass
class BlockCounts:
    """Counts of the connections of a block of lines: all found, the late ones, and the newest time.

    Attributes
    ----------
    connections : int
        Connections with an entity, the late ones included.
    late : int
        Connections earlier than ``not_before``, counted and not added.
    newest_ts : float or None
        The latest time (after the shift) of any connection, late or not. None without connections.
    """

    connections: int = 0
    late: int = 0
    newest_ts: float | None = None

    def observe(self, ts: float) -> None:
        if self.newest_ts is None or ts > self.newest_ts:
            self.newest_ts = ts


def add_tsv_lines_to_windows(
    texts: list[str],
    first_line: int,
    *,
    header: TsvHeader,
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
    """Add the connections of a block of TSV lines to their windows and count them.

    Parameters
    ----------
    texts : list of str
        Consecutive lines of one file, without line endings.
    first_line : int
        The 1-based line number of ``texts[0]``.
    header : TsvHeader
        The file's header state, updated in place. Pass the same object for every block.
    source, default_path, internal, stats, orientation, reporter
        As for :func:`agent.zeek_conn.iter_connections`.
    window_seconds : int
        Window length. A connection at ``ts`` goes to the window starting at
        ``int(ts // window_seconds) * window_seconds``.
    accumulator_for : callable
        Returns the accumulator of an (entity, window start), opening it if needed.
    time_shift_secs : float, default 0.0
        Added to every connection's time.
    not_before : float or None, default None
        Connections earlier than this (after the shift) are counted and not added.
    on_other_record : callable or None, default None
        Called with each record of a log path other than ``conn``, as by
        :func:`agent.zeek_conn.iter_connections`.

    Returns
    -------
    BlockCounts
        The connections found, the late ones and the newest connection time.
    """
    adder = _WindowAdder(window_seconds, accumulator_for, not_before)
    for start, end, is_data in _runs(texts):
        plan = _current_plan(header, default_path) if is_data else None
        if plan is None or not _add_run(texts[start:end], plan, header, internal, stats, orientation,
                                        adder, time_shift_secs):
            numbered = zip(range(first_line + start, first_line + end), texts[start:end])
            for connection in iter_connections(numbered, is_json=False, source=source, default_path=default_path,
                                               internal=internal, stats=stats, orientation=orientation,
                                               reporter=reporter, time_shift_secs=time_shift_secs,
                                               on_other_record=on_other_record, header=header):
                adder.add_connection(connection)
    return adder.counts


class _WindowAdder:
    def __init__(self, window_seconds: int, accumulator_for: AccumulatorFor, not_before: float | None) -> None:
        self.window_seconds = window_seconds
        self.accumulator_for = accumulator_for
        self.not_before = not_before
        self.counts = BlockCounts()

    def add_connection(self, connection: Connection) -> None:
        ts = connection.ts
        self.counts.connections += 1
        self.counts.observe(ts)
        if self.not_before is not None and ts < self.not_before:
            self.counts.late += 1
            return
        start = int(ts // self.window_seconds) * self.window_seconds
        self.accumulator_for(connection.entity, start).add(connection)


def _runs(texts: list[str]) -> list[tuple[int, int, bool]]:
    """Split a block into runs of data lines and single header or blank lines: (start, end, is_data)."""
    # Header and blank lines are rare. The first characters of all lines show whether there are any.
    if texts and "" not in texts and not {text[0] for text in texts} & {"#", " ", "\t"}:
        return _data_runs(0, len(texts))
    runs, start = [], 0
    for index, text in enumerate(texts):
        if not text or text[0] in "# \t":
            runs.extend(_data_runs(start, index))
            runs.append((index, index + 1, False))
            start = index + 1
    runs.extend(_data_runs(start, len(texts)))
    return runs


def _data_runs(start: int, end: int) -> list[tuple[int, int, bool]]:
    """Return the data lines from ``start`` to ``end`` as runs of at most _MAX_RUN_LINES lines."""
    return [(first, min(end, first + _MAX_RUN_LINES), True) for first in range(start, end, _MAX_RUN_LINES)]


def _current_plan(header: TsvHeader, default_path: str) -> _ConnPlan | None:
    if header.layout is None or (header.path or default_path) != "conn" or len(header.separator) != 1:
        return None
    return _plan(header.layout)


def _add_run(
    texts: list[str],
    plan: _ConnPlan,
    header: TsvHeader,
    internal: InternalNetworks,
    stats: ParseStats,
    orientation: OrientationStats,
    adder: _WindowAdder,
    time_shift_secs: float,
) -> bool:
    """Add a run of data lines if every row passes the fast path's checks, and return whether it did."""
    unset, count = plan.unset, len(texts)

    # Every line must split into the declared columns.
    run = split_run(texts, header.separator, plan.width)
    if run is None:
        return False

    # Times in the plain form only, inside the plausible range.
    ts, plain = run.plain_decimals(plan.ts, max_decimals=_MAX_TS_DECIMALS)
    for row in np.flatnonzero(~plain).tolist():
        text = run.text(plan.ts, row)
        if _PLAIN_SECONDS.fullmatch(text) is None:
            return False
        ts[row] = float(text)
    if not (ts < _TS_MAX_SECS).all():
        return False

    # Counts, ports and booleans are checked by the general converters' rules. Other typed
    # columns are converted, each distinct value once.
    if not all(run.all_digits_or(index, unset) for index in plan.counts(range(plan.width))):
        return False
    bools = plan.bools(range(plan.width)) if plan.bools is not None else ()
    if not all(run.all_in(index, plan.bool_tokens) for index in bools):
        return False
    try:
        for index, convert in plan.checked:
            for value in run.factorize([index])[1]:
                if value != unset:
                    convert(value)
    except (ValueError, OverflowError):
        return False
    durations = _durations(run, plan.duration, unset)
    if durations is None:
        return False

    # Addresses come from the orientation cache. An invalid one sends the run to the line path.
    # Rows refer to addresses by the code of their normalised name, so that texts written
    # differently for one address (IPv6 forms) make one entity.
    classified, classify = internal._classified, internal.classify
    codes, distinct = run.factorize([plan.orig_h, plan.resp_h])
    classes = [classified.get(text) or classify(text) for text in distinct]
    if None in classes:
        return False
    name_codes: dict[str, int] = {}
    name_of_text = np.array([name_codes.setdefault(found[0], len(name_codes)) for found in classes], dtype=np.int64)
    names = np.array(list(name_codes), dtype=object)
    internal_flags = np.array([found[1] for found in classes], dtype=bool)
    shareable_flags = np.array([found[2] for found in classes], dtype=bool)
    sides = [(name_of_text[side], internal_flags[side], shareable_flags[side])
             for side in (codes[:count], codes[count:])]

    # Ports and byte counts, checked as digits above, fit int64 below 19 digits. A port above
    # 65535 sends the run to the line path, which reports it.
    integers = {}
    for name, index in (("orig_p", plan.orig_p), ("resp_p", plan.resp_p), ("orig_bytes", plan.orig_bytes),
                        ("resp_bytes", plan.resp_bytes)):
        values = run.integers(index, unset, -1)
        if values is None or (name.endswith("_p") and int(values.max()) > MAX_PORT):
            return False
        integers[name] = values
    state_codes, states = run.factorize([plan.conn_state])
    failed_states = np.array([_is_failed(state) for state in states], dtype=bool)

    stats.records += count
    _orient_and_add(ts + time_shift_secs if time_shift_secs else ts, sides, integers, durations,
                    failed_states[state_codes], names, orientation, adder)
    return True


def _durations(run: TsvRunBytes, column: int, unset: str) -> np.ndarray | None:
    """Return the durations as the line path's ``float`` reads them, 0.0 when unset.

    Returns None if a duration is invalid, not finite or negative.
    """
    durations, plain = run.plain_decimals(column, max_decimals=_MAX_DURATION_DECIMALS)
    unset_rows = run.equals(column, unset)
    durations[unset_rows] = 0.0
    try:
        for row in np.flatnonzero(~(plain | unset_rows)).tolist():
            durations[row] = float(run.text(column, row))
    except ValueError:
        return None

    # A NaN or infinite duration would turn the window's mean into NaN, and a negative one
    # would lower it. The line path reports such a line, so its run takes the line path.
    if not (np.isfinite(durations).all() and (durations >= 0.0).all()):
        return None
    return durations


def _is_failed(state: str) -> bool:
    return state in FAILED_CONN_STATES or ("\\" in state and unescape(state) in FAILED_CONN_STATES)


def _orient_and_add(ts: np.ndarray, sides: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    integers: dict[str, np.ndarray], durations: np.ndarray, failed: np.ndarray, names: np.ndarray,
                    orientation: OrientationStats, adder: _WindowAdder) -> None:
    """Orient checked rows, count them and add them to their windows.

    ``sides`` contains (address codes into ``names``, is internal, is shareable) of the
    originators and then the responders. ``integers`` contains the ``orig_p``, ``resp_p``,
    ``orig_bytes`` and ``resp_bytes`` columns, with -1 for an unset value.
    """
    # Orient: the internal side is the entity, the originator when both are internal.
    count = len(ts)
    (orig_codes, orig_internal, orig_shareable), (resp_codes, resp_internal, resp_shareable) = sides
    kept = orig_internal | resp_internal
    kept_count = int(kept.sum())
    orientation.both_external += count - kept_count
    orientation.connections += kept_count
    out = orig_internal
    columns = _Columns(
        ts=ts,
        entity=np.where(out, orig_codes, resp_codes),
        peer=np.where(out, resp_codes, orig_codes),
        shareable=np.where(out, resp_shareable, orig_shareable),
        port=np.where(out, integers["resp_p"], integers["orig_p"]),
        bytes_out=np.maximum(np.where(out, integers["orig_bytes"], integers["resp_bytes"]), 0),
        bytes_in=np.maximum(np.where(out, integers["resp_bytes"], integers["orig_bytes"]), 0),
        duration=durations,
        failed=failed,
    )
    keep = kept
    if kept_count:
        adder.counts.connections += kept_count
        adder.counts.observe(float(columns.ts[kept].max()))
    if adder.not_before is not None:
        early = kept & (columns.ts < adder.not_before)
        adder.counts.late += int(early.sum())
        keep = kept & ~early
    _add_groups(columns.select(keep), names, adder)


class _Columns:
    """Columns of a run's connections: one array per field, in line order."""

    def __init__(self, **arrays: np.ndarray) -> None:
        self.__dict__.update(arrays)

    def select(self, mask: np.ndarray) -> _Columns:
        return _Columns(**{name: array[mask] for name, array in self.__dict__.items()})


def _add_groups(columns: _Columns, names: np.ndarray, adder: _WindowAdder) -> None:
    """Add each (entity, window) group of the rows to its accumulator, rows in line order.

    ``columns.entity`` and ``columns.peer`` are codes of the addresses in ``names``.
    """
    if not len(columns.ts):
        return
    window_seconds = adder.window_seconds
    starts = (np.floor_divide(columns.ts, window_seconds).astype(np.int64) * window_seconds)
    entity_codes = columns.entity

    # A stable sort keeps each group's rows in line order. Each column is sorted and turned
    # into a list once, so a group is then a slice of every list.
    order = np.lexsort((starts, entity_codes))
    sorted_codes, sorted_starts = entity_codes[order], starts[order]
    firsts = np.flatnonzero(np.concatenate(([True], (np.diff(sorted_codes) != 0) | (np.diff(sorted_starts) != 0))))
    ends = np.append(firsts[1:], len(order))
    ts, durations = columns.ts[order].tolist(), columns.duration[order].tolist()
    peer_codes = columns.peer[order]
    peers = names[peer_codes].tolist()

    # Unset ports and unshareable peers are left out of their counters. The kept values of
    # each group are a slice of one list of kept values.
    sorted_ports = columns.port[order]
    port_kept, port_firsts, port_ends = _kept_bounds(sorted_ports >= 0, firsts)
    ports = (sorted_ports if port_kept is None else sorted_ports[port_kept]).tolist()
    remote_kept, remote_firsts, remote_ends = _kept_bounds(columns.shareable[order], firsts)
    remotes = peers if remote_kept is None else names[peer_codes[remote_kept]].tolist()

    # Integer sums of each group at once. They are exact, so their order does not matter.
    bytes_out = _group_sums(columns.bytes_out[order], firsts)
    bytes_in = _group_sums(columns.bytes_in[order], firsts)
    failed = _group_sums(columns.failed[order].astype(np.int64), firsts)
    groups = zip(names[sorted_codes[firsts]].tolist(), sorted_starts[firsts].tolist(), firsts.tolist(), ends.tolist(),
                 port_firsts, port_ends, remote_firsts, remote_ends, bytes_out, bytes_in, failed)
    # Counter.update calls this C helper after an isinstance(Mapping) check that costs more
    # than counting a group's few values, so the loop calls it directly.
    accumulator_for, count_into = adder.accumulator_for, _count_elements
    for entity, start, first, end, port_first, port_end, remote_first, remote_end, sent, received, failures in groups:
        accumulator = accumulator_for(entity, start)
        accumulator.timestamps.extend(ts[first:end])
        accumulator.peers.update(peers[first:end])
        count_into(accumulator.ports, ports[port_first:port_end])
        accumulator.bytes_out += sent
        accumulator.bytes_in += received
        accumulator.failed += failures
        accumulator.duration_sum = reduce(add, durations[first:end], accumulator.duration_sum)
        count_into(accumulator.remotes, remotes[remote_first:remote_end])


def _kept_bounds(kept: np.ndarray, firsts: np.ndarray) -> tuple[np.ndarray | None, list[int], list[int]]:
    """Return the rows kept (None for all of them) and where each group's rows start and end among them."""
    if kept.all():
        bounds = firsts.tolist()
        return None, bounds, bounds[1:] + [len(kept)]
    kept_before = np.concatenate(([0], np.cumsum(kept)))
    bounds = kept_before[firsts].tolist()
    return kept, bounds, bounds[1:] + [int(kept_before[-1])]


def _group_sums(values: np.ndarray, firsts: np.ndarray) -> list[int]:
    """Return the sum of each group of non-negative ``values`` that starts at an index of ``firsts``, as Python ints."""
    # int64 sums are exact below 2**63. A run whose sum could reach it is summed as Python ints.
    if len(values) and int(values.max()) * len(values) >= 1 << 63:
        bounds = firsts.tolist() + [len(values)]
        as_list = values.tolist()
        return [sum(as_list[first:end]) for first, end in zip(bounds, bounds[1:])]
    return np.add.reduceat(values, firsts).tolist()
