"""Read Zeek logs into typed records: TSV or JSON lines, plain or gzip-compressed.

This is the reader's front door. It opens the file, detects gzip by its magic bytes (not by
the file name), frames and decodes lines, and hands them to the TSV reader
(:mod:`agent.zeek_tsv`) or the JSON reader (:mod:`agent.zeek_json`). It picks the reader from
the first non-blank line: a JSON log starts with ``{``, a TSV log with its ``#`` header. Value
conversion lives in :mod:`agent.zeek_values`. The record type and counters live in
:mod:`agent.zeek_records`.

A line that cannot become a record never stops the reader. It is counted by reason in
:class:`ParseStats` and logged for the first few lines of each file, and a summary follows
(see :class:`agent.zeek_records.MalformedLineReporter`).
"""

from __future__ import annotations

import gzip
import itertools
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from agent.errors import LogReadError
from agent.zeek_json import parse_json_lines
from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from agent.zeek_tsv import parse_tsv_lines

if TYPE_CHECKING:
    from agent.events import Quarantine

__all__ = ["MAX_LINE_BYTES", "NUL_BYTE_DETAIL", "ParseStats", "ZeekRecord", "first_line_of", "header_of_rotated_copy",
           "iter_zeek_records", "log_path_from_name", "read_header"]

log = logging.getLogger(__name__)

# Long enough for any line Zeek writes in practice (a DNS answer vector or a long URI is a few
# KiB), short enough that a file without newlines cannot exhaust the agent's memory.
MAX_LINE_BYTES = 1 << 20

# Maximum length of a header line read from a file to take its header. A Zeek header line
# names or types each column, a few KiB for the widest logs.
MAX_HEADER_LINE_BYTES = 1 << 16

# Zeek escapes a NUL in a value as \x00, so a raw one marks a damaged line: a crash can leave
# a zero-filled block behind.
NUL_BYTE_DETAIL = "line holds a NUL byte, which Zeek never writes unescaped"

GZIP_MAGIC = b"\x1f\x8b"

# A reader of a TSV log's numbered lines, with the keywords of agent.zeek_tsv.parse_tsv_lines.
TsvReader = Callable[..., Iterable[ZeekRecord]]

# A reader of a JSON log's numbered lines, with the keywords of agent.zeek_json.parse_json_lines.
JsonReader = Callable[..., Iterable[ZeekRecord]]


def iter_zeek_records(
    path: Path,
    *,
    stats: ParseStats | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    tsv_reader: TsvReader | None = None,
    json_reader: JsonReader | None = None,
    quarantine: Quarantine | None = None,
) -> Iterator[ZeekRecord]:
    """Yield the records of one Zeek log file, in file order.

    Parameters
    ----------
    path : Path
        A Zeek TSV or JSON-lines log, optionally gzip-compressed.
    stats : ParseStats or None, default None
        Counters to add to. Pass the same object for several files to get totals.
    max_line_bytes : int, default MAX_LINE_BYTES (1 MiB)
        Longest line accepted, in bytes. A longer line is skipped and counted as
        ``line_too_long`` without being held in memory.
    tsv_reader : callable or None, default None
        Reads the lines of a TSV log in place of :func:`agent.zeek_tsv.parse_tsv_lines`, with
        the same arguments. The replay run passes one that adds conn lines straight to the
        network windows and yields only the records of other logs.
    json_reader : callable or None, default None
        The same for a JSON log, in place of :func:`agent.zeek_json.parse_json_lines`.
    quarantine : Quarantine or None, default None
        Where the raw bytes of malformed lines are kept, with their byte offsets (in the
        decompressed data of a ``.gz`` file).

    Returns
    -------
    Iterator[ZeekRecord]
        The file is opened on the first ``next()`` and closed when the iterator is exhausted
        or closed.

    Raises
    ------
    ValueError
        If ``max_line_bytes`` is less than 1.
    LogReadError
        If the file cannot be opened or read, or its gzip data is corrupt. A gzip stream that
        merely ends early (a file still being written) is not an error: the reader stops there
        and counts ``truncated_gzip``.

    Notes
    -----
    Bytes are decoded as UTF-8 with replacement: an invalid byte sequence becomes U+FFFD and
    the line is counted in ``ParseStats.invalid_utf8``. Replacement, not surrogateescape, is
    used because a lone surrogate cannot be encoded as UTF-8, which the JSON, STIX and SQLite
    code further on needs. The cost is that two different invalid byte strings can read the same. Zeek itself writes
    non-UTF-8 bytes as ``\\xNN``, so this only affects files that other tools wrote or changed.
    """
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be at least 1; got {max_line_bytes}")
    return _read_records(Path(path), stats if stats is not None else ParseStats(), max_line_bytes,
                         tsv_reader or parse_tsv_lines, json_reader or parse_json_lines, quarantine)


def log_path_from_name(path: Path) -> str:
    """Return the log path a file name suggests: the name up to its first dot (``conn.log.gz``)."""
    return path.name.split(".", 1)[0] or path.name


def _read_records(path: Path, stats: ParseStats, max_line_bytes: int,
                  tsv_reader: TsvReader, json_reader: JsonReader, quarantine: Quarantine | None) -> Iterator[ZeekRecord]:
    source = str(path)
    reporter = MalformedLineReporter(source, stats, quarantine=quarantine)
    records_before = stats.records
    try:
        with ExitStack() as stack:
            stream = _open_log(path, stack)
            lines = _read_lines(stream, source, reporter, max_line_bytes)
            first, lines = _first_line(lines)
            is_json = first.lstrip().startswith("{")
            # Rows without a header are what Zeek writes into a log that copytruncate emptied.
            if first and not is_json and not first.startswith("#") and (
                    borrowed := header_of_rotated_copy(path)) is not None:
                log.info("zeek log %s has rows but no header; using the header of %s, its newest rotated copy",
                         source, borrowed[0])
                lines = _with_borrowed_header(borrowed[1], lines, stats)
            parse = json_reader if is_json else tsv_reader
            yield from parse(lines, source=source, default_path=log_path_from_name(path), stats=stats,
                             reporter=reporter)
    finally:
        reporter.finish()
        log.debug("zeek log %s: %d records read", source, stats.records - records_before)


def header_of_rotated_copy(path: Path) -> tuple[Path, list[str]] | None:
    """Return the newest rotated copy of a TSV log and its header lines, or None.

    ``copytruncate`` copies a log aside and empties it, and Zeek goes on writing rows without
    a new header. An agent that first meets the emptied file then finds its header only in the
    copy: a file beside it named after it, a dot or a dash and a digit (``conn.log.1``,
    ``conn.log-20240501.gz``). The copy must declare ``#fields`` and ``#types`` and the same
    ``#path``, or none.
    """
    log_path = log_path_from_name(path)
    try:
        siblings = [entry for entry in path.parent.iterdir()
                    if _is_rotated_name(entry.name, path.name) and entry.is_file()]
        siblings.sort(key=lambda entry: entry.stat().st_mtime_ns, reverse=True)
    except OSError:
        return None
    for copy in siblings:
        header = read_header(copy)
        if header is None:
            continue
        keys = {text.split("\t", 1)[0].split(" ", 1)[0]: text for text in header}
        declared = keys.get("#path", "").split("\t")[1:]
        if "#fields" in keys and "#types" in keys and declared in ([], [log_path]):
            return copy, header
    return None


def read_header(path: Path) -> list[str] | None:
    """Return the ``#`` lines at the start of a TSV log, plain or gzip, or None when it cannot be read.

    At most 16 lines of at most ``MAX_HEADER_LINE_BYTES`` each are read, so a hostile file
    costs little memory.
    """
    header: list[str] = []
    try:
        with ExitStack() as stack:
            stream = _open_log(path, stack)
            for _ in range(16):
                raw = stream.readline(MAX_HEADER_LINE_BYTES + 1)
                if len(raw) > MAX_HEADER_LINE_BYTES or not raw.startswith(b"#"):
                    break
                header.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (LogReadError, OSError, EOFError, zlib.error):
        return None
    return header


def first_line_of(path: Path) -> str | None:
    """Return the first non-blank line of a log, plain or gzip, "" when it has none, or None when it cannot be read.

    Only the file's start is read, at most 16 lines of at most ``MAX_HEADER_LINE_BYTES``.
    """
    try:
        with ExitStack() as stack:
            stream = _open_log(path, stack)
            for _ in range(16):
                raw = stream.readline(MAX_HEADER_LINE_BYTES + 1)
                text = raw.lstrip(b"\x00").decode("utf-8", "replace")
                if not raw or text.strip():
                    return text.rstrip("\r\n")
    except (LogReadError, OSError, EOFError, zlib.error):
        return None
    return ""


def _is_rotated_name(name: str, original: str) -> bool:
    """Return whether ``name`` is ``original`` followed by a dot or a dash and a digit."""
    rest = name[len(original):] if name.startswith(original) else ""
    return len(rest) >= 2 and rest[0] in ".-" and rest[1].isascii() and rest[1].isdigit()


def _open_log(path: Path, stack: ExitStack) -> BinaryIO:
    """Open a log for binary reading, through gzip when its first bytes are gzip's magic."""
    try:
        raw = stack.enter_context(open(path, "rb"))
        if raw.peek(len(GZIP_MAGIC))[: len(GZIP_MAGIC)] != GZIP_MAGIC:
            return raw
    except OSError as err:
        raise LogReadError(str(path), err.strerror or str(err)) from err
    return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))


def _read_lines(
    stream: BinaryIO, source: str, reporter: MalformedLineReporter, max_line_bytes: int
) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) for each line without its LF or CRLF ending.

    Lines that are too long or hold a NUL byte are reported and not yielded. A NUL byte never
    occurs in Zeek output (Zeek escapes it as ``\\x00``), so it signals a damaged file, such as
    the zero-filled block a crash can leave behind.
    """
    number = 0
    offset = 0
    try:
        while True:
            chunk = stream.readline(max_line_bytes + 1)
            if not chunk:
                return
            start = offset
            offset += len(chunk)

            # A run of NUL bytes where a line starts is the hole that a writer without O_APPEND
            # leaves after a copytruncate, often longer than a line may be. It is skipped, as the
            # live tailer skips it, and the line after it is read whole.
            if chunk[:1] == b"\x00":
                stripped = chunk.lstrip(b"\x00")
                reporter.stats.nul_bytes_skipped += len(chunk) - len(stripped)
                if not stripped:
                    continue
                start += len(chunk) - len(stripped)
                if not stripped.endswith(b"\n"):
                    rest = stream.readline(max_line_bytes + 1 - len(stripped))
                    offset += len(rest)
                    stripped += rest
                chunk = stripped
            number += 1
            # The copies of the line cost time on every line, so they are made for a quarantine only.
            if reporter.quarantine is not None:
                raw = chunk[:-1] if chunk.endswith(b"\n") else chunk
                reporter.remember(number, start, raw[:-1] if raw.endswith(b"\r") else raw)

            # The line did not end within the limit: drop the rest of it unread into memory.
            if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
                while chunk and not chunk.endswith(b"\n"):
                    chunk = stream.readline(max_line_bytes + 1)
                    offset += len(chunk)
                reporter.report(number, "line_too_long", f"line longer than {max_line_bytes} bytes")
                continue

            # Zeek escapes CR inside values, so a CR before the LF is a CRLF line ending.
            if chunk.endswith(b"\n"):
                chunk = chunk[:-1]
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
            if b"\x00" in chunk:
                reporter.report(number, "nul_byte", NUL_BYTE_DETAIL)
                continue
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError:
                reporter.count_invalid_utf8()
                text = chunk.decode("utf-8", "replace")
            yield number, text
    except EOFError:
        reporter.report(number + 1, "truncated_gzip",
                        "gzip data ends before its end marker; a file still being written, or a cut copy")
    except (OSError, zlib.error) as err:
        raise LogReadError(source, f"read failed after line {number}: {err}") from err


def _first_line(lines: Iterator[tuple[int, str]]) -> tuple[str, Iterator[tuple[int, str]]]:
    """Return the first non-blank line ("" when there is none) and all the lines."""
    head: list[tuple[int, str]] = []
    for item in lines:
        head.append(item)
        if item[1].strip():
            return item[1], itertools.chain(head, lines)
    return "", iter(head)


def _with_borrowed_header(header: list[str], lines: Iterator[tuple[int, str]],
                          stats: ParseStats) -> Iterator[tuple[int, str]]:
    """Yield a rotated copy's header lines as line 0, then ``lines``.

    The header lines are not lines of this file, so they are taken off the header count again
    once the parser has read them.
    """
    yield from ((0, text) for text in header)
    stats.header_lines -= len(header)
    yield from lines
