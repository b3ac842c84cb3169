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

from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from agent.zeek_values import Converter, ImplausibleTimestamp, build_converter, unescape

log = logging.getLogger(__name__)

DIRECTIVES = frozenset(
    {"separator", "set_separator", "empty_field", "unset_field", "path", "open", "close", "fields", "types"}
)

# IoT-23 joins columns with exactly this; see the module docstring.
JOINED_COLUMNS = "   "


@dataclass(frozen=True, slots=True)
class ColumnLayout:
    """The columns declared by one ``#fields``/``#types`` pair, with a converter per column.

    ``joined`` lists (position in a row, number of columns) for each header token that held
    several columns joined by spaces; ``raw_width`` is the row width with those joins.
    """

    names: tuple[str, ...]
    types: tuple[str, ...]
    converters: tuple[Converter, ...]
    unset_field: str
    joined: tuple[tuple[int, int], ...]
    raw_width: int

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
        """Return the typed fields of a row; a converter's ValueError propagates."""
        unset = self.unset_field
        return {
            name: None if raw == unset else convert(raw)
            for name, convert, raw in zip(self.names, self.converters, values)
        }

    def find_invalid(self, values: list[str]) -> tuple[str, str, Exception]:
        """Return the first column whose value does not convert: name, type and the error."""
        for name, type_name, convert, raw in zip(self.names, self.types, self.converters, values):
            if raw == self.unset_field:
                continue
            try:
                convert(raw)
            except (ValueError, OverflowError) as err:
                return name, type_name, err
        raise AssertionError("find_invalid called on a row that converts")


class TsvHeader:
    """The header state of a TSV file: tokens from the latest header block and its layout."""

    def __init__(self) -> None:
        self.separator = "\t"
        self.set_separator = ","
        self.empty_field = "(empty)"
        self.unset_field = "-"
        self.path: str | None = None
        self.fields: list[str] | None = None
        self.layout: ColumnLayout | None = None

    def reset(self) -> None:
        """Forget the previous block, because ``#separator`` opens a new one."""
        self.__init__()  # type: ignore[misc]


def parse_tsv_lines(
    lines: Iterable[tuple[int, str]],
    *,
    source: str,
    default_path: str,
    stats: ParseStats,
    reporter: MalformedLineReporter,
) -> Iterator[ZeekRecord]:
    """Yield a record for each data row of a TSV log; count and report every other line.

    ``lines`` holds (1-based line number, text without the line ending).
    """
    header = TsvHeader()
    for number, text in lines:
        if not text:
            stats.skipped += 1
            continue

        # A header line, possibly after stray whitespace.
        if text[0] == "#" or (text[0] in " \t" and _directive_name(text.lstrip(" \t")) in DIRECTIVES):
            _read_header_line(header, text.lstrip(" \t"), number, stats, reporter)
            continue

        layout = header.layout
        if layout is None:
            missing = "#fields" if header.fields is None else "#types"
            reporter.report(number, "no_header", f"data line with no usable {missing} header line before it")
            continue

        values = text.split(header.separator)
        if len(values) != len(layout.names):
            expanded = layout.split_joined(values)
            if expanded is None:
                reporter.report(number, "column_count",
                                f"{len(values)} values but #fields declares {len(layout.names)} columns")
                continue
            values = expanded

        try:
            fields = layout.convert(values)
        except (ValueError, OverflowError):
            name, type_name, err = layout.find_invalid(values)
            if isinstance(err, ImplausibleTimestamp):
                reporter.report(number, "implausible_timestamp", f"field {name}: {err}")
            else:
                reporter.report(number, f"invalid_value:{name}", f"field {name} ({type_name}): {err}")
            continue

        stats.records += 1
        yield ZeekRecord(header.path or default_path, fields, source, number)


def _directive_name(text: str) -> str:
    """Return the word after ``#`` up to the first space or tab."""
    end = 1
    while end < len(text) and text[end] not in " \t":
        end += 1
    return text[1:end]


def _read_header_line(
    header: TsvHeader, text: str, number: int, stats: ParseStats, reporter: MalformedLineReporter
) -> None:
    name = _directive_name(text)
    if name not in DIRECTIVES:
        stats.skipped += 1
        return
    stats.header_lines += 1

    # `#separator` is followed by a space, not by the separator it declares.
    if name == "separator":
        separator = unescape(text[len("#separator") + 1:])
        header.reset()
        if not separator:
            reporter.report(number, "invalid_header", "#separator declares an empty separator")
            return
        header.separator = separator
        return

    _, found, value = text.partition(header.separator)
    if name in ("open", "close"):
        return
    if name == "path":
        header.path = unescape(value) or None
        return
    if not found or not value:
        reporter.report(number, "invalid_header", f"#{name} line has no value")
        return
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
        _read_types(header, value.split(header.separator), number, reporter)


def _read_types(header: TsvHeader, raw_types: list[str], number: int, reporter: MalformedLineReporter) -> None:
    """Build the column layout from ``#fields`` and the ``#types`` just read."""
    header.layout = None
    if header.fields is None:
        reporter.report(number, "invalid_header", "#types line before any #fields line")
        return

    names, joined = _split_joined_tokens(header.fields)
    types, joined_types = _split_joined_tokens(raw_types)
    if len(names) != len(types) or joined != joined_types:
        reporter.report(number, "invalid_header",
                        f"#fields declares {len(names)} columns but #types declares {len(types)}")
        return
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        reporter.report(number, "invalid_header", f"#fields repeats the column names {duplicates}")
        return
    if joined:
        log.debug("zeek log %s: header joins columns with three spaces; splitting them", reporter.source)

    converters: list[Converter] = []
    for name, type_name in zip(names, types):
        converter = build_converter(type_name, field_name=name, set_separator=header.set_separator,
                                    empty_field=header.empty_field, unset_field=header.unset_field)
        if converter is None:
            log.warning("zeek log %s line %d: field %s has the unknown type %r; its values are kept as strings",
                        reporter.source, number, name, type_name)
            converter = build_converter("string", field_name=name, set_separator=header.set_separator,
                                        empty_field=header.empty_field, unset_field=header.unset_field)
            assert converter is not None
        converters.append(converter)

    header.layout = ColumnLayout(
        names=tuple(names),
        types=tuple(types),
        converters=tuple(converters),
        unset_field=header.unset_field,
        joined=tuple(joined),
        raw_width=len(header.fields),
    )


def _split_joined_tokens(tokens: list[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """Split header tokens that hold several space-joined names or types.

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
