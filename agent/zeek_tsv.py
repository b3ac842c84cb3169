"""Read Zeek's tab-separated (TSV) log format, driven by its ``#`` header lines.

The header names the separator, set separator, empty-field and unset-field tokens, the log
path, the column names (``#fields``) and the column types (``#types``). It can appear again in
the middle of a file, because concatenated or rotated logs each bring their own, and the
newest header always applies. ``#close`` is optional: a file still being written has none.

Two quirks of published data are handled:

- IoT-23's labelled conn logs join their last three columns with three spaces, not a tab, in
  ``#fields``, ``#types`` and every row (``tunnel_parents   label   detailed-label``). Zeek
  names and types never contain spaces, so a header token with spaces is split into columns.
  A row whose column count matches the joined header is split the same way.
- A header line may start with stray whitespace (Slips' test10 conn.log has a tab before
  ``#separator``), so whitespace before a known directive is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.network import conn_value_problem
from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from agent.zeek_values import Converter, ImplausibleTimestamp, build_converter, string_converter, unescape

log = logging.getLogger(__name__)

DIRECTIVES = frozenset(
    {"separator", "set_separator", "empty_field", "unset_field", "path", "open", "close", "fields", "types"}
)

SEPARATOR_DIRECTIVE = "#separator"

# IoT-23 joins columns with exactly this; see the module docstring.
JOINED_COLUMNS = "   "


@dataclass(frozen=True, slots=True)
class ColumnLayout:
    """The columns declared by one ``#fields``/``#types`` pair, with a converter per column.

    ``unset_field`` and ``empty_field`` are the header's tokens when the layout was built.
    ``joined`` lists (position in a row, number of columns) for each header token that
    contained several columns joined by spaces. ``raw_width`` is the row width with those
    joins. ``unknown_types`` names the columns whose type has no converter, which are read as
    strings.
    """

    names: tuple[str, ...]
    types: tuple[str, ...]
    converters: tuple[Converter, ...]
    unset_field: str
    empty_field: str
    joined: tuple[tuple[int, int], ...]
    raw_width: int
    unknown_types: tuple[str, ...]

    def split_joined(self, values: list[str]) -> list[str] | None:
        """Split the joined columns of a row, or return None if the row does not fit them."""
        if not self.joined or len(values) != self.raw_width:
            return None
        expanded: list[str] = []
        start = 0
        for position, count in self.joined:
            expanded.extend(values[start:position])
            parts = values[position].split(JOINED_COLUMNS, count - 1)
            if len(parts) != count:
                return None
            expanded.extend(parts)
            start = position + 1
        expanded.extend(values[start:])
        return expanded

    def convert(self, values: list[str]) -> dict[str, Any]:
        """Return the typed fields of a row.

        Raises
        ------
        InvalidColumnValue
            If a value does not convert to its column's type.
        """
        unset = self.unset_field
        fields: dict[str, Any] = {}
        name = ""
        try:
            for name, convert, raw in zip(self.names, self.converters, values):
                fields[name] = None if raw == unset else convert(raw)
        except (ValueError, OverflowError) as err:
            raise InvalidColumnValue(name, self.types[self.names.index(name)], err) from err
        return fields


class InvalidColumnValue(Exception):
    """A row value that does not convert, which parse_tsv_lines reports as a malformed line."""

    def __init__(self, name: str, type_name: str, error: Exception) -> None:
        self.name, self.type_name, self.error = name, type_name, error
        super().__init__(f"field {name} ({type_name}): {error}")


class TsvHeader:
    """The header state of a TSV file: tokens from the latest header block and its layout."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Return to Zeek's default tokens, because ``#separator`` opens a new header block."""
        self.separator = "\t"
        self.set_separator = ","
        self.empty_field = "(empty)"
        self.unset_field = "-"
        self.path: str | None = None
        self.fields: list[str] | None = None
        self.layout: ColumnLayout | None = None


def parse_tsv_lines(
    lines: Iterable[tuple[int, str]],
    *,
    source: str,
    default_path: str,
    stats: ParseStats,
    reporter: MalformedLineReporter,
) -> Iterator[ZeekRecord]:
    """Yield a record for each data row of a TSV log, and count and report every other line.

    ``lines`` yields (1-based line number, text without the line ending) pairs.
    """
    header = TsvHeader()
    for number, text in iter_data_lines(lines, header, stats, reporter):
        fields = convert_row(header, text, number, reporter, header.path or default_path)
        if fields is not None:
            stats.records += 1
            yield ZeekRecord(header.path or default_path, fields, source, number)


def iter_data_lines(
    lines: Iterable[tuple[int, str]], header: TsvHeader, stats: ParseStats, reporter: MalformedLineReporter
) -> Iterator[tuple[int, str]]:
    """Apply header lines to ``header``, count blank lines and yield the other (data) lines."""
    for number, text in lines:
        if not text:
            stats.skipped += 1
            continue

        # A header line, possibly after stray whitespace. Zeek writes a data line that would
        # start with "#" as "\\x23...", so a line starting with "#" is never a record.
        first = text[0]
        if first == "#" or (first in " \t" and _directive_name(text.lstrip(" \t"), header) in DIRECTIVES):
            _read_header_line(header, text.lstrip(" \t"), number, stats, reporter)
            continue
        yield number, text


def convert_row(header: TsvHeader, text: str, number: int, reporter: MalformedLineReporter,
                log_path: str = "") -> dict[str, Any] | None:
    """Return the typed fields of one data line, or None after reporting why it has none.

    The fields of a ``conn`` line (``log_path``) must also suit a connection
    (:func:`agent.network.conn_value_problem`), whatever types the header declares.
    """
    layout = header.layout
    if layout is None:
        missing = "#fields" if header.fields is None else "#types"
        reporter.report(number, "no_header", f"data line with no usable {missing} header line before it")
        return None

    values = text.split(header.separator)
    if len(values) != len(layout.names):
        expanded = layout.split_joined(values)
        if expanded is None:
            reporter.report(number, "column_count",
                            f"{len(values)} values but #fields declares {len(layout.names)} columns")
            return None
        values = expanded

    try:
        fields = layout.convert(values)
    except InvalidColumnValue as invalid:
        if isinstance(invalid.error, ImplausibleTimestamp):
            reporter.report(number, "implausible_timestamp", f"field {invalid.name}: {invalid.error}")
        else:
            reporter.report(number, f"invalid_value:{invalid.name}", str(invalid))
        return None
    if log_path == "conn" and (problem := conn_value_problem(fields)) is not None:
        reporter.report(number, f"invalid_value:{problem[0]}", f"field {problem[0]}: {problem[1]}")
        return None
    return fields


def _directive_name(text: str, header: TsvHeader) -> str:
    """Return the word after ``#``: up to a space for ``#separator``, else up to the separator."""
    if text.startswith(SEPARATOR_DIRECTIVE) and text[len(SEPARATOR_DIRECTIVE):][:1] in ("", " ", "\t"):
        return "separator"
    return text[1:].partition(header.separator)[0]


def _read_header_line(
    header: TsvHeader, text: str, number: int, stats: ParseStats, reporter: MalformedLineReporter
) -> None:
    """Apply one ``#`` line to the header state and count it once: header, skipped or malformed."""
    name = _directive_name(text, header)
    if name not in DIRECTIVES:
        stats.skipped += 1
        return

    problem = _apply_directive(header, name, text)
    if problem:
        reporter.report(number, "invalid_header", problem)
        return
    stats.header_lines += 1
    if name == "types" and header.layout is not None:
        _log_layout_notes(header.layout, reporter.source, number)


def _apply_directive(header: TsvHeader, name: str, text: str) -> str | None:
    """Update the header state from one directive, and return what is wrong with it, if anything."""
    # `#separator` is followed by a space, not by the separator it declares.
    if name == "separator":
        separator = unescape(text[len(SEPARATOR_DIRECTIVE) + 1:])
        header.reset()
        if not separator:
            return "#separator declares an empty separator"
        header.separator = separator
        return None

    _, found, value = text.partition(header.separator)
    if name in ("open", "close"):
        return None
    if name == "path":
        header.path = unescape(value) or None
        return None
    if not found or not value:
        return f"#{name} line has no value"
    if name == "set_separator":
        header.set_separator = unescape(value)
    elif name == "empty_field":
        header.empty_field = unescape(value)
    elif name == "unset_field":
        header.unset_field = unescape(value)
    elif name == "fields":
        header.fields = value.split(header.separator)
        header.layout = None
    elif name == "types":
        header.layout = None
        if header.fields is None:
            return "#types line with no valid #fields line before it"
        layout = build_layout(header, value.split(header.separator))
        if isinstance(layout, str):
            return layout
        header.layout = layout
    return None


def build_layout(header: TsvHeader, raw_types: list[str]) -> ColumnLayout | str:
    """Return the column layout of ``#fields`` and ``#types``, or what makes them unusable."""
    raw_names = header.fields or []
    names, joined = _split_joined_tokens(raw_names)
    types, joined_types = _split_joined_tokens(raw_types)
    if len(names) != len(types) or joined != joined_types:
        return f"#fields declares {len(names)} columns but #types declares {len(types)}"
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return f"#fields repeats the column names {duplicates}"

    # A type this reader does not know keeps its values as strings, so the rows still count.
    converters: list[Converter] = []
    unknown: list[str] = []
    for name, type_name in zip(names, types):
        converter = build_converter(type_name, field_name=name, set_separator=header.set_separator,
                                    empty_field=header.empty_field, unset_field=header.unset_field)
        if converter is None:
            unknown.append(name)
            converter = string_converter(header.empty_field)
        converters.append(converter)

    return ColumnLayout(
        names=tuple(names),
        types=tuple(types),
        converters=tuple(converters),
        unset_field=header.unset_field,
        empty_field=header.empty_field,
        joined=tuple(joined),
        raw_width=len(raw_names),
        unknown_types=tuple(unknown),
    )


def _log_layout_notes(layout: ColumnLayout, source: str, number: int) -> None:
    if layout.joined:
        log.debug("zeek log %s line %d: header joins columns with three spaces; splitting them", source, number)
    for name in layout.unknown_types:
        type_name = layout.types[layout.names.index(name)]
        log.warning("zeek log %s line %d: field %s has the unknown type %r; its values are kept as strings",
                    source, number, name, type_name)


def _split_joined_tokens(tokens: list[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """Split header tokens that contain several space-joined names or types.

    Returns the split tokens and (token position, number of parts) for each split token.
    """
    split: list[str] = []
    joined: list[tuple[int, int]] = []
    for position, token in enumerate(tokens):
        if " " in token and token.strip():
            parts = token.split()
            joined.append((position, len(parts)))
            split.extend(parts)
        else:
            split.append(token)
    return split, joined
