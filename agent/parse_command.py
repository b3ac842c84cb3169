"""``fti agent parse``: print the normalised events of log files, so a user can check that fti
reads their logs.

Events go to standard output as JSON lines. The counts (lines, events by kind, skipped lines,
errors by reason) go to standard error as one JSON object per file and one for the total.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.errors import LogReadError
from agent.events import EventStats, Quarantine
from agent.sources import LINE_SOURCE_TYPES, iter_file_events
from agent.zeek import ParseStats, iter_zeek_records

__all__ = ["SOURCE_TYPES", "run_parse"]

SOURCE_TYPES = ("zeek", *LINE_SOURCE_TYPES)


def run_parse(
    source_type: str,
    files: list[Path],
    *,
    out: TextIO,
    err: TextIO,
    time_zone: str = "UTC",
    quarantine_path: Path | None = None,
) -> int:
    """Parse ``files`` as ``source_type``; return 0, or 1 if a file could not be read.

    Raises
    ------
    ValueError
        If ``source_type`` or ``time_zone`` is unknown.
    """
    if source_type not in SOURCE_TYPES:
        raise ValueError(f"--source-type must be one of {', '.join(SOURCE_TYPES)}; got {source_type!r}")
    tz = _zone(time_zone)
    quarantine = Quarantine(quarantine_path) if quarantine_path is not None else None
    status = 0
    totals: dict[str, Any] = {"files": 0, "lines": 0, "events": 0, "skipped": 0, "errors": 0}

    for path in files:
        try:
            counts = _parse_zeek(path, out, quarantine) if source_type == "zeek" else _parse_events(
                path, source_type, out, tz, quarantine)
        except LogReadError as error:
            print(json.dumps({"file": str(path), "error": str(error)}), file=err)
            status = 1
            continue
        print(json.dumps({"file": str(path), **counts}, sort_keys=True), file=err)
        totals["files"] += 1
        for key in ("lines", "events", "skipped", "errors"):
            totals[key] += counts[key]

    print(json.dumps({"total": totals}, sort_keys=True), file=err)
    return status


def _parse_events(path: Path, source_type: str, out: TextIO, tz: tzinfo, quarantine: Quarantine | None
                  ) -> dict[str, Any]:
    stats = EventStats()
    for event in iter_file_events(path, source_type, stats=stats, quarantine=quarantine, tz=tz):
        out.write(event.to_json() + "\n")
    return stats.to_dict()


def _parse_zeek(path: Path, out: TextIO, quarantine: Quarantine | None) -> dict[str, Any]:
    stats = ParseStats()
    lines = 0
    for record in iter_zeek_records(path, stats=stats, quarantine=quarantine):
        lines = record.line
        body = {"source_type": "zeek", "kind": record.log_path, "source": record.source, "line": record.line,
                "fields": record.fields}
        out.write(json.dumps(body, ensure_ascii=False, default=_json_value) + "\n")
    return {"lines": max(lines, stats.records + stats.header_lines + stats.skipped + stats.malformed_total),
            "events": stats.records, "skipped": stats.header_lines + stats.skipped,
            "errors": stats.malformed_total, "errors_by_reason": dict(sorted(stats.malformed.items()))}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value, key=str)
    return str(value)


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"--timezone must be an IANA time zone such as Europe/Berlin; got {name!r}") from error
