"""Turn Zeek ``conn`` lines straight into oriented connections: the agent's hot path.

The general TSV reader (:mod:`agent.zeek_tsv`) converts every column of every row into a
:class:`agent.zeek_records.ZeekRecord`, and :func:`agent.network.orient_connections` then
reads nine of those fields. For a conn log this reader plans, once per ``#fields``/``#types``
header, which columns the connection needs and how to check the others cheaply:

- ``ts`` in Zeek's plain form (digits, at most six decimals) is read with ``float`` and
  checked against the plausible range. ``float`` of that text is the same number as the
  general reader's microsecond datetime turned back into epoch seconds, because both are the
  correctly rounded value of one decimal.
- ``count`` and ``port`` columns must be ASCII digits or the unset token, and ``bool`` columns
  ``T``, ``F`` or unset. Those are the general converters' own rules, so the verdict is the same.
- Addresses are looked up in the orientation cache of :class:`agent.network.InternalNetworks`,
  which parses with the same ``ipaddress`` rule as the general converter.
- String, enum and string-set columns cannot fail to convert, so they are left as text. Any
  column of another type is converted, only to check it.

A row that fails any of these checks, or that does not split into the declared columns, goes
through the general reader's conversion and orientation instead. So every line gets exactly
the verdict, counts and messages it gets from :func:`agent.zeek_tsv.parse_tsv_lines` followed
by :func:`agent.network.orient_connections`, and only the common case is fast. Headers of
other logs, and JSON lines, take the general path throughout.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from agent.network import FAILED_CONN_STATES, MAX_PORT, Connection, InternalNetworks, OrientationStats, orient_fields
from agent.zeek_json import parse_json_lines
from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from agent.zeek_tsv import ColumnLayout, TsvHeader, convert_row, iter_data_lines
from agent.zeek_values import CONTAINER_TYPE, STRING_TYPES, TS_MAX, EPOCH, unescape

__all__ = ["decode_lines", "iter_connections"]

# The plain form of a Zeek time: digits with at most six decimals. Other forms (exponent
# notation, more decimals) are rare and take the general path.
_PLAIN_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]{0,6})?")
_TS_MAX_SECS = (TS_MAX - EPOCH).total_seconds()

# The conn columns a connection is built from, and the Zeek types the plan accepts for each.
_NEEDED_TYPES: dict[str, frozenset[str]] = {
    "ts": frozenset({"time"}),
    "id.orig_h": frozenset({"addr"}),
    "id.resp_h": frozenset({"addr"}),
    "id.orig_p": frozenset({"port", "count"}),
    "id.resp_p": frozenset({"port", "count"}),
    "duration": frozenset({"interval", "double"}),
    "orig_bytes": frozenset({"count"}),
    "resp_bytes": frozenset({"count"}),
    "conn_state": STRING_TYPES,
}
_COUNT_TYPES = frozenset({"count", "port"})
_TEXT_TYPES = STRING_TYPES | {"pattern"}

RecordCallback = Callable[[ZeekRecord], None]


@dataclass(frozen=True, slots=True)
class _ConnPlan:
    """Column positions and checks for the rows of one conn layout."""

    width: int
    ts: int
    orig_h: int
    resp_h: int
    orig_p: int
    resp_p: int
    duration: int
    orig_bytes: int
    resp_bytes: int
    conn_state: int
    counts: Callable[[Sequence[str]], tuple[str, ...]]
    bools: Callable[[Sequence[str]], tuple[str, ...]] | None
    bool_tokens: frozenset[str]
    checked: tuple[tuple[int, Callable[[str], Any]], ...]
    unset: str
    empty: str


def _plan(layout: ColumnLayout) -> _ConnPlan | None:
    """Return the fast plan for a conn layout, or None when its rows need the general path."""
    position = {name: index for index, name in enumerate(layout.names)}
    for name, types in _NEEDED_TYPES.items():
        if name not in position or layout.types[position[name]] not in types:
            return None
    # A token that is also a failed state or a digit string would make the shortcuts wrong.
    unset, empty = layout.unset_field, layout.empty_field
    if {unset, empty} & FAILED_CONN_STATES or unset.isdigit() or layout.joined:
        return None

    counts, bools, checked = [], [], []
    for index, type_name in enumerate(layout.types):
        container = CONTAINER_TYPE.fullmatch(type_name)
        if type_name in _COUNT_TYPES:
            counts.append(index)
        elif type_name == "bool":
            bools.append(index)
        elif type_name in _TEXT_TYPES or (container is not None and container[2] in _TEXT_TYPES):
            continue
        elif layout.names[index] not in ("ts", "id.orig_h", "id.resp_h", "duration"):
            checked.append((index, layout.converters[index]))
    return _ConnPlan(
        width=len(layout.names),
        ts=position["ts"],
        orig_h=position["id.orig_h"],
        resp_h=position["id.resp_h"],
        orig_p=position["id.orig_p"],
        resp_p=position["id.resp_p"],
        duration=position["duration"],
        orig_bytes=position["orig_bytes"],
        resp_bytes=position["resp_bytes"],
        conn_state=position["conn_state"],
        counts=_tuple_getter(counts),
        bools=_tuple_getter(bools) if bools else None,
        bool_tokens=frozenset({"T", "F", unset}),
        checked=tuple(checked),
        unset=unset,
        empty=empty,
    )


def _tuple_getter(indexes: list[int]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """Return a function that picks ``indexes`` from a row, always as a tuple."""
    if len(indexes) == 1:
        only = indexes[0]
        return lambda values: (values[only],)
    return itemgetter(*indexes)  # type: ignore[return-value]


def decode_lines(lines: list[bytes]) -> list[str]:
    """Decode framed lines as UTF-8, invalid bytes replaced by U+FFFD, each without a final CR.

    The lines are joined, decoded and split again, which is several times faster than
    decoding each one. A newline ends any invalid byte sequence, so the result is the same.
    """
    if not lines:
        return []
    joined = b"\n".join(lines)
    texts = joined.decode("utf-8", "replace").split("\n")
    if b"\r" in joined:
        texts = [text[:-1] if text.endswith("\r") else text for text in texts]
    return texts


def iter_connections(
    lines: Iterable[tuple[int, str]],
    *,
    is_json: bool,
    source: str,
    default_path: str,
    internal: InternalNetworks,
    stats: ParseStats,
    orientation: OrientationStats,
    reporter: MalformedLineReporter,
    time_shift_secs: float = 0.0,
    on_other_record: RecordCallback | None = None,
    header: TsvHeader | None = None,
) -> Iterator[Connection]:
    """Yield the connections of a Zeek log's lines, counting every line as the general readers do.

    Parameters
    ----------
    lines : Iterable[tuple[int, str]]
        (1-based line number, text without the line ending) pairs of one file.
    is_json : bool
        True for Zeek JSON lines, False for TSV.
    source, default_path : str
        The file, and the log path used when its header or ``_path`` names none.
    internal : InternalNetworks
        The site's networks, which pick each connection's entity.
    stats, orientation : ParseStats, OrientationStats
        Counters of lines and of connections, added to.
    reporter : MalformedLineReporter
        Counts and logs malformed lines of this file.
    time_shift_secs : float, default 0.0
        Added to every connection's time.
    on_other_record : callable or None, default None
        Called with each record of a log path other than ``conn``, which has no connection.
    header : TsvHeader or None, default None
        The TSV header state, updated in place. Pass the same object to read a file's lines
        in several calls. None starts from no header.
    """
    if is_json:
        records = parse_json_lines(lines, source=source, default_path=default_path, stats=stats, reporter=reporter)
        yield from _orient_records(records, internal, time_shift_secs, orientation, on_other_record)
        return
    yield from _iter_tsv_connections(lines, source=source, default_path=default_path, internal=internal,
                                     stats=stats, orientation=orientation, reporter=reporter,
                                     time_shift_secs=time_shift_secs, on_other_record=on_other_record,
                                     header=header if header is not None else TsvHeader())


def _orient_records(records: Iterable[ZeekRecord], internal: InternalNetworks, time_shift_secs: float,
                    orientation: OrientationStats, on_other_record: RecordCallback | None) -> Iterator[Connection]:
    for record in records:
        if record.log_path != "conn":
            if on_other_record is not None:
                on_other_record(record)
            continue
        connection = orient_fields(record.fields, internal, source=record.source, line=record.line,
                                   time_shift_secs=time_shift_secs, stats=orientation)
        if connection is not None:
            yield connection


def _iter_tsv_connections(  # noqa: C901 - one loop, kept flat for speed
    lines: Iterable[tuple[int, str]],
    *,
    source: str,
    default_path: str,
    internal: InternalNetworks,
    stats: ParseStats,
    orientation: OrientationStats,
    reporter: MalformedLineReporter,
    time_shift_secs: float,
    on_other_record: RecordCallback | None,
    header: TsvHeader,
) -> Iterator[Connection]:
    planned_for: tuple[object, object] = (None, None)
    plan: _ConnPlan | None = None
    classified = internal._classified
    classify = internal.classify
    plain_seconds = _PLAIN_SECONDS.fullmatch
    failed_states = FAILED_CONN_STATES
    ts_max = _TS_MAX_SECS

    for number, text in iter_data_lines(lines, header, stats, reporter):
        # A new header, or a #path line after it, changes the plan.
        if (header.layout, header.path) != planned_for:
            planned_for = (header.layout, header.path)
            is_conn = header.layout is not None and (header.path or default_path) == "conn"
            plan = _plan(header.layout) if is_conn else None  # type: ignore[arg-type]

        connection = None
        if plan is not None:
            connection = _FALLBACK
            values = text.split(header.separator)
            unset = plan.unset
            ts_text = values[plan.ts] if len(values) == plan.width else ""
            if plain_seconds(ts_text) is not None and (ts := float(ts_text)) < ts_max:
                counts = plan.counts(values)
                joined = "".join(counts)
                counts_valid = (joined.isdigit() and joined.isascii() and "" not in counts) or all(
                    value == unset or (value.isdigit() and value.isascii()) for value in counts)
                if counts_valid and (plan.bools is None or plan.bool_tokens.issuperset(plan.bools(values))) and \
                        _check_columns(plan, values):
                    connection = _orient_row(plan, values, ts + time_shift_secs, classified, classify,
                                             failed_states, source, number, orientation)
            if connection is not _FALLBACK:
                stats.records += 1
                if connection is not None:
                    yield connection
                continue

        # The general path: every column converted, then oriented like any record.
        fields = convert_row(header, text, number, reporter, header.path or default_path)
        if fields is None:
            continue
        stats.records += 1
        record = ZeekRecord(header.path or default_path, fields, source, number)
        yield from _orient_records((record,), internal, time_shift_secs, orientation, on_other_record)


# Returned by _orient_row for a row the fast checks cannot vouch for.
_FALLBACK: Any = object()


def _check_columns(plan: _ConnPlan, values: list[str]) -> bool:
    """Return whether every column of a type without a shortcut converts."""
    unset = plan.unset
    for index, convert in plan.checked:
        raw = values[index]
        if raw != unset:
            try:
                convert(raw)
            except (ValueError, OverflowError):
                return False
    return True


def _orient_row(
    plan: _ConnPlan,
    values: list[str],
    ts: float,
    classified: dict[object, tuple[str, bool, bool] | None],
    classify: Callable[[object], tuple[str, bool, bool] | None],
    failed_states: frozenset[str],
    source: str,
    number: int,
    orientation: OrientationStats,
) -> Connection | None:
    """Return the connection of a checked row, None without an entity, or ``_FALLBACK``."""
    unset = plan.unset
    duration_text = values[plan.duration]
    try:
        duration = 0.0 if duration_text == unset else float(duration_text)
    except ValueError:
        return _FALLBACK
    # NaN, infinite or negative durations and ports above 65535 take the general path, which reports them.
    if duration - duration != 0.0 or duration < 0.0:
        return _FALLBACK
    orig_p_text, resp_p_text = values[plan.orig_p], values[plan.resp_p]
    for port_text in (orig_p_text, resp_p_text):
        if port_text != unset and (len(port_text) > 5 or int(port_text) > MAX_PORT):
            return _FALLBACK

    # Unset or invalid addresses take the general path, which reports them as before.
    orig_text, resp_text = values[plan.orig_h], values[plan.resp_h]
    orig = classified.get(orig_text) or classify(orig_text)
    resp = classified.get(resp_text) or classify(resp_text)
    if orig is None or resp is None:
        return _FALLBACK

    # The internal side is the entity. When both are internal, the originator is.
    outbound = orig[1]
    if not outbound and not resp[1]:
        orientation.both_external += 1
        return None
    if outbound:
        entity, remote_class, port_text = orig[0], resp, resp_p_text
    else:
        entity, remote_class, port_text = resp[0], orig, orig_p_text
    orig_bytes_text, resp_bytes_text = values[plan.orig_bytes], values[plan.resp_bytes]
    orig_bytes = 0 if orig_bytes_text == unset else int(orig_bytes_text)
    resp_bytes = 0 if resp_bytes_text == unset else int(resp_bytes_text)
    state = values[plan.conn_state]
    failed = state in failed_states
    if not failed and "\\" in state:
        failed = unescape(state) in failed_states

    orientation.connections += 1
    return Connection(
        ts,
        entity,
        remote_class[0],
        remote_class[0] if remote_class[2] else None,
        None if port_text == unset else int(port_text),
        outbound,
        orig_bytes if outbound else resp_bytes,
        resp_bytes if outbound else orig_bytes,
        duration,
        failed,
        source,
        number,
    )
