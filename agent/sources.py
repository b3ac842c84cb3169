"""Read whole files of any supported source type into events, for ``fti agent parse`` and replay.

Line-based sources (sshd, Suricata, Sysmon in syslog or JSON lines) are framed on ``\\n`` only,
never with ``str.splitlines``, which also breaks at U+2028, U+2029 and five control
characters that may legally sit inside a JSON string. A file is read through gzip when its
first bytes are gzip's magic. A file ends at its end: its last line is read even without a
newline, unlike a followed file, whose partial last line waits for its newline
(:mod:`agent.tailer`). Sysmon ``.evtx`` files and XML exports are read as records, not lines
(:mod:`agent.sysmon_files`).
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Protocol

from agent.errors import LogReadError
from agent.events import Event, EventStats, LineRejected, LineReporter, Quarantine, decode_line
from agent.sshd import SshdParser
from agent.suricata import SuricataParser
from agent.sysmon import SysmonParser

__all__ = ["LINE_SOURCE_TYPES", "LineParser", "iter_file_events", "make_line_parser", "parse_line"]

log = logging.getLogger(__name__)

UTC = timezone.utc

LINE_SOURCE_TYPES = ("sshd", "suricata", "sysmon")

# Same limit as the Zeek reader and the tailer.
MAX_LINE_BYTES = 1 << 20

READ_BLOCK_BYTES = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"


class LineParser(Protocol):
    source_type: str

    def parse(self, text: str, *, source: str, line: int) -> Event | None: ...


def make_line_parser(source_type: str, *, reference: datetime, tz: tzinfo = UTC) -> LineParser:
    """Return the parser for ``source_type``.

    ``reference`` places year-less syslog timestamps (see :class:`agent.sshd.SshdParser`).

    Raises
    ------
    ValueError
        If ``source_type`` is not one of ``LINE_SOURCE_TYPES``.
    """
    if source_type == "sshd":
        return SshdParser(reference=reference, tz=tz)
    if source_type == "suricata":
        return SuricataParser()
    if source_type == "sysmon":
        return SysmonParser()
    raise ValueError(f"source type must be one of {', '.join(LINE_SOURCE_TYPES)}; got {source_type!r}")


def parse_line(parser: LineParser, data: bytes, *, truncated: bool, line: int, offset: int,
               stats: EventStats, reporter: LineReporter) -> Event | None:
    """Parse one framed line and count the outcome; never raises for bad input."""
    stats.lines += 1
    if truncated:
        reporter.reject(line, "line_too_long", f"line cut at {len(data)} bytes", raw=data, offset=offset)
        return None
    text, replaced = decode_line(data)
    if text.endswith("\r"):
        text = text[:-1]
    try:
        event = parser.parse(text, source=reporter.source, line=line)
    except LineRejected as rejected:
        reporter.reject(line, rejected.reason, rejected.detail, raw=data, offset=offset)
        return None
    if event is None:
        stats.skipped += 1
        return None
    if replaced:
        event = Event(event.source_type, event.kind, event.ts, event.fields, event.source, event.line,
                      event.flags | {"invalid_utf8"})
    stats.events[event.kind] += 1
    stats.flags.update(event.flags)
    return event


def iter_file_events(
    path: Path,
    source_type: str,
    *,
    stats: EventStats,
    quarantine: Quarantine | None = None,
    tz: tzinfo = UTC,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[Event]:
    """Yield the events of one file of ``source_type``, in file order.

    Year-less sshd timestamps are placed before the file's modification time.

    Raises
    ------
    ValueError
        If ``source_type`` is unknown.
    LogReadError
        If the file cannot be opened or read, or its gzip data is corrupt.
    """
    source = str(path)
    try:
        reference = datetime.fromtimestamp(os.stat(path).st_mtime, tz=UTC)
    except OSError as err:
        raise LogReadError(source, err.strerror or str(err)) from err
    if source_type == "sysmon":
        from agent.sysmon_files import detect_record_format, iter_record_file_events

        record_format = detect_record_format(path)
        if record_format is not None:
            yield from iter_record_file_events(path, record_format, stats=stats, quarantine=quarantine)
            return
    parser = make_line_parser(source_type, reference=reference, tz=tz)
    reporter = LineReporter(source, stats, quarantine=quarantine)
    try:
        for number, (offset, data, truncated) in enumerate(iter_file_lines(path, max_line_bytes), start=1):
            event = parse_line(parser, data, truncated=truncated, line=number, offset=offset, stats=stats,
                               reporter=reporter)
            if event is not None:
                yield event
    finally:
        reporter.finish()


def iter_file_lines(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (offset, line without ``\\n``, whether it was cut) for each line of a file.

    Offsets are in the decompressed stream for a gzip file. A line longer than
    ``max_line_bytes`` is cut to that length and the rest is skipped.
    """
    try:
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == GZIP_MAGIC else raw
            yield from _frame(stream, max_line_bytes)
    except EOFError:
        # A gzip stream that ends early is a file still being compressed, or a cut copy: the
        # lines read so far stand.
        log.warning("log file %s: gzip data ends before its end marker; read up to there", path)
    except (OSError, zlib.error) as err:
        raise LogReadError(str(path), f"read failed: {err}") from err


def _frame(stream, max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:  # type: ignore[no-untyped-def]
    offset = 0
    while True:
        chunk = stream.readline(max_line_bytes + 1)
        if not chunk:
            return
        start = offset
        offset += len(chunk)
        if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
            # Skip the rest of the line without holding it in memory.
            head = chunk[:max_line_bytes]
            while chunk and not chunk.endswith(b"\n"):
                chunk = stream.readline(max_line_bytes + 1)
                offset += len(chunk)
            yield start, head, True
            continue
        yield start, chunk[:-1] if chunk.endswith(b"\n") else chunk, False
