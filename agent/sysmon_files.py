"""Read Sysmon files that hold records rather than lines: ``.evtx`` logs and Windows XML exports.

``.evtx`` files are read with the ``evtx`` package, a binding to the Rust ``evtx`` crate,
which renders each record as event XML. On the eight evtx-attack-samples files (670 records)
it took 0.01 to 0.06 s, at least 10,000 records per second, where ``python-evtx`` 0.8.1
took 11.7 to 12.7 s (53 to 57 records per second). Measured with
``benchmarks/evtx_readers.py`` on one AMD EPYC core; see docs/benchmarks.md.

An XML export (``wevtutil qe /f:xml``, Event Viewer's "Save as XML") is a sequence of
``<Event>`` documents, with or without an ``<Events>`` root. Each ``<Event>...</Event>`` span
is parsed on its own, so one damaged record costs that record only.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from agent.errors import LogReadError
from agent.events import Event, EventStats, LineRejected, LineReporter, Quarantine
from agent.sysmon import event_from_xml

log = logging.getLogger(__name__)

__all__ = ["EvtxRecord", "detect_record_format", "event_from_record", "iter_evtx_records",
           "iter_record_file_events"]

EVTX_MAGIC = b"ElfFile\x00"
# Characters of a cut last record kept in quarantine. The rest of the file after its start
# may be large, such as a hostile file of unclosed <Event> tags.
MAX_TRUNCATED_RAW_CHARS = 64 * 1024

# An .evtx file is a 4 KiB header followed by whole 64 KiB chunks, so any other size means
# the file was cut, for example copied while Windows was still writing it.
EVTX_HEADER_BYTES = 4096
EVTX_CHUNK_BYTES = 65536

# The evtx binding raises a plain RuntimeError for a damaged record and can go on with the
# next one. A file that fails this many times in a row is taken to be no evtx file at all.
MAX_CONSECUTIVE_RECORD_ERRORS = 1000


class EvtxRecord(NamedTuple):
    """One record of an ``.evtx`` file, as the evtx binding returns it.

    ``timestamp`` is the binding's ISO 8601 text in UTC (``2019-02-16T10:01:50.6995248Z UTC``),
    so two of them compare in time order as strings.
    """

    record_id: int
    timestamp: str
    xml: str


def detect_record_format(path: Path) -> str | None:
    """Return ``"evtx"`` or ``"xml"`` for a record file, or None for a line-based file."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(4096)
    except OSError as err:
        raise LogReadError(str(path), err.strerror or str(err)) from err
    if head.startswith(EVTX_MAGIC):
        return "evtx"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<?xml") or text.startswith(b"<Events") or text.startswith(b"<Event "):
        return "xml"
    return None


def iter_record_file_events(
    path: Path, record_format: str, *, stats: EventStats, quarantine: Quarantine | None = None
) -> Iterator[Event]:
    """Yield the Sysmon events of an ``.evtx`` file or an XML export; skip other providers.

    ``Event.line`` is the record's EventRecordID for ``.evtx`` and its position (from 1) in an
    XML export.
    """
    reporter = LineReporter(str(path), stats, quarantine=quarantine)
    if record_format == "evtx":
        records: Iterator[tuple[int, str, bool]] = (
            (record.record_id, record.xml, True) for record in iter_evtx_records(path, reporter))
    else:
        records = _xml_records(path)
    try:
        for number, xml, complete in records:
            if not complete:
                stats.lines += 1
                reporter.reject(number, "truncated_record",
                                "the export ends inside this record, before </Event>",
                                raw=xml[:MAX_TRUNCATED_RAW_CHARS].encode("utf-8"))
                continue
            event = event_from_record(xml, number, path=str(path), stats=stats, reporter=reporter)
            if event is not None:
                yield event
    finally:
        reporter.finish()


def event_from_record(xml: str, number: int, *, path: str, stats: EventStats,
                      reporter: LineReporter) -> Event | None:
    """Parse one record's event XML and count it in ``stats``; None for a rejected or other record."""
    stats.lines += 1
    try:
        event = event_from_xml(xml, source=path, line=number)
    except LineRejected as rejected:
        reporter.reject(number, rejected.reason, rejected.detail, raw=xml.encode("utf-8"))
        return None
    if event is None:
        stats.skipped += 1
        return None
    stats.events[event.kind] += 1
    stats.flags.update(event.flags)
    return event


def iter_evtx_records(path: Path, reporter: LineReporter, *, check_chunks: bool = True) -> Iterator[EvtxRecord]:
    """Yield the records of an ``.evtx`` file in file order; report unreadable ones to ``reporter``.

    With ``check_chunks`` a file that ends inside a 64 KiB chunk is reported as
    ``truncated_file``. A live reader turns it off, because a file still being copied ends in a
    partial chunk whose records are read once the chunk is whole.
    """
    from evtx import PyEvtxParser

    try:
        parser = PyEvtxParser(str(path))
    except (OSError, RuntimeError) as err:
        raise LogReadError(str(path), f"not a readable evtx file: {err}") from err
    records = parser.records()
    failures = 0
    position = 0
    while True:
        position += 1
        try:
            record = next(records)
        except StopIteration:
            if check_chunks:
                _check_whole_chunks(path, position, reporter)
            return
        except RuntimeError as err:
            failures += 1
            reporter.reject(position, "invalid_record", f"evtx record unreadable: {err}")
            if failures >= MAX_CONSECUTIVE_RECORD_ERRORS:
                raise LogReadError(str(path), f"{failures} unreadable records in a row") from err
            continue
        failures = 0
        yield EvtxRecord(int(record["event_record_id"]), record["timestamp"], record["data"])


class EvtxChunk(NamedTuple):
    """The records of one chunk, the positions it took (records and unreadable ones) and the failures in a row at its end."""

    records: list[EvtxRecord]
    positions: int
    failures: int


def read_evtx_chunk(header: bytes, chunk: bytes, path: str, reporter: LineReporter, *,
                    first_position: int, failures: int = 0) -> EvtxChunk:
    """Read one 64 KiB chunk of an ``.evtx`` file, with the file's header, as the binding reads it in the file.

    Records are numbered from ``first_position`` in reports, so that a chunk read alone
    reports the positions a read of the whole file would. ``failures`` carries the run of
    unreadable records over from the chunk before.
    """
    from evtx import PyEvtxParser

    try:
        parser = PyEvtxParser(io.BytesIO(header + chunk))
    except (OSError, RuntimeError) as err:
        raise LogReadError(path, f"not a readable evtx file: {err}") from err
    found, positions = [], 0
    records = parser.records()
    while True:
        try:
            record = next(records)
        except StopIteration:
            return EvtxChunk(found, positions, failures)
        except RuntimeError as err:
            failures += 1
            reporter.reject(first_position + positions, "invalid_record", f"evtx record unreadable: {err}")
            positions += 1
            if failures >= MAX_CONSECUTIVE_RECORD_ERRORS:
                raise LogReadError(path, f"{failures} unreadable records in a row") from err
            continue
        positions += 1
        failures = 0
        found.append(EvtxRecord(int(record["event_record_id"]), record["timestamp"], record["data"]))


def _check_whole_chunks(path: Path, position: int, reporter: LineReporter) -> None:
    """Count a file cut inside a chunk, because the binding skips that chunk's records silently."""
    size = path.stat().st_size
    partial = (size - EVTX_HEADER_BYTES) % EVTX_CHUNK_BYTES
    if size >= EVTX_HEADER_BYTES and not partial:
        return
    reporter.reject(position, "truncated_file",
                    f"evtx file of {size} bytes ends {partial} bytes into a 64 KiB chunk, whose records "
                    "were not read; copy the file again once Windows has closed it")


def _xml_records(path: Path) -> Iterator[tuple[int, str, bool]]:
    """Yield the number, text and completeness of each ``<Event>`` record of an XML export."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as err:
        raise LogReadError(str(path), err.strerror or str(err)) from err
    # Each span is found with str.find, not a regular expression: ``<Event[\s>].*?</Event>``
    # scans to the end of the text from every unclosed ``<Event`` start, which takes time
    # quadratic in the file's size when an export is cut or hostile.
    number = 0
    position = 0
    while (start := text.find("<Event", position)) >= 0:
        after = text[start + 6:start + 7]
        if not (after == ">" or after.isspace()):
            position = start + 6
            continue
        end = text.find("</Event>", start + 7)
        if end < 0:
            # An export cut inside its last record. It is counted and reported, not dropped.
            yield number + 1, text[start:], False
            return
        number += 1
        position = end + len("</Event>")
        yield number, text[start:position], True
