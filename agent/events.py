"""The normalised event that the sshd, Suricata and Sysmon parsers produce, and their counters.

Each parser turns one line (or one record) into at most one :class:`Event`. A line that contains
nothing the agent uses (an sshd ``Connection closed`` line, a Suricata ``stats`` event) is
counted as skipped. A line that cannot be read is counted as an error by reason, the first few
per file are logged, and a sample of the raw bytes with file and offset goes to the
:class:`Quarantine` file when one is configured. No line ever stops a parser.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.errors import MalformedLogLine

log = logging.getLogger(__name__)

__all__ = ["Event", "EventStats", "LineRejected", "LineReporter", "Quarantine"]

# Enough to show what is wrong with a file without flooding the agent's log.
MAX_WARNINGS_PER_FILE = 5

# A detail quotes the offending value, which can be up to a whole line long.
MAX_DETAIL_CHARS = 300

# Bounds the memory of a long-lived EventStats shared across many files.
MAX_KEPT_ERRORS = 100


@dataclass(frozen=True, slots=True)
class Event:
    """One security-relevant event from a non-Zeek source.

    Attributes
    ----------
    source_type : str
        ``"sshd"``, ``"suricata"`` or ``"sysmon"``.
    kind : str
        What happened, in the source's own terms: ``failed_password``, ``alert``,
        ``process_create`` and so on (each parser lists its kinds).
    ts : datetime
        When it happened, timezone-aware UTC.
    fields : dict[str, Any]
        The event's values by name. Names follow the source's own field names.
    source : str
        The file the event was read from.
    line : int
        The 1-based line or record number in that file.
    flags : frozenset[str]
        Parse warnings that did not stop the event: ``truncated`` (fields missing after a
        cut), ``sanitized`` (characters replaced), ``invalid_utf8``.
    """

    source_type: str
    kind: str
    ts: datetime
    fields: dict[str, Any]
    source: str
    line: int
    flags: frozenset[str] = frozenset()

    def to_json(self) -> str:
        """Return the event as one JSON object, for ``fti agent parse`` and the quarantine."""
        body = {"source_type": self.source_type, "kind": self.kind,
                "ts": self.ts.isoformat().replace("+00:00", "Z"), "source": self.source, "line": self.line,
                **({"flags": sorted(self.flags)} if self.flags else {}), "fields": self.fields}
        return json.dumps(body, ensure_ascii=False, sort_keys=False, default=str)


class LineRejected(Exception):
    """Raised inside a parser for a line that cannot become an event; the reporter counts it."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


@dataclass(slots=True)
class EventStats:
    """Counters of one or more parsed files. Pass the same object to sum several.

    Attributes
    ----------
    lines : int
        Lines (or records) read.
    events : Counter[str]
        Events produced, by kind.
    skipped : int
        Lines that hold no event the agent uses, by design.
    errors : Counter[str]
        Lines that could not be read, by reason.
    flags : Counter[str]
        Events produced with a parse warning, by flag.
    kept : list[MalformedLogLine]
        The first ``MAX_KEPT_ERRORS`` errors, with file, line, reason and detail.
    """

    lines: int = 0
    events: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    kept: list[MalformedLogLine] = field(default_factory=list)

    @property
    def events_total(self) -> int:
        return sum(self.events.values())

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "events": self.events_total, "events_by_kind": dict(sorted(self.events.items())),
                "skipped": self.skipped, "errors": self.errors_total,
                "errors_by_reason": dict(sorted(self.errors.items())), "flags": dict(sorted(self.flags.items()))}


class Quarantine:
    """Append the raw bytes of rejected lines, with file, offset and reason, to a JSON-lines file.

    Parameters
    ----------
    path : Path
        The quarantine file. Its folder is created when missing.
    max_bytes : int, default 10 MiB
        Size at which sampling stops. Later rejects are still counted, but not kept. Ten MiB stores
        thousands of samples, which is plenty to diagnose a systematic defect.
    """

    def __init__(self, path: Path, *, max_bytes: int = 10 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dropped = 0
        path.parent.mkdir(parents=True, exist_ok=True)

    def keep(self, source: str, offset: int, reason: str, raw: bytes) -> None:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            size = 0
        if size >= self.max_bytes:
            self.dropped += 1
            return
        record = {"source": source, "offset": offset, "reason": reason}
        try:
            record["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            record["raw_base64"] = base64.b64encode(raw).decode("ascii")
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


class LineReporter:
    """Count one file's rejected lines, log the first few and quarantine them.

    Parameters
    ----------
    source : str
        The file, named in every message.
    stats : EventStats
        Where the lines are counted.
    quarantine : Quarantine or None, default None
        Where raw rejected lines are kept.
    max_warnings : int, default MAX_WARNINGS_PER_FILE
        Warnings logged one per line before the reporter switches to a summary at the end.
    """

    def __init__(self, source: str, stats: EventStats, *, quarantine: Quarantine | None = None,
                 max_warnings: int = MAX_WARNINGS_PER_FILE) -> None:
        self.source = source
        self.stats = stats
        self.quarantine = quarantine
        self.max_warnings = max_warnings
        self.reasons: Counter[str] = Counter()

    def reject(self, line: int, reason: str, detail: str, *, raw: bytes = b"", offset: int = -1) -> None:
        """Count a rejected line, log it while under the warning limit and quarantine it."""
        if len(detail) > MAX_DETAIL_CHARS:
            detail = f"{detail[:MAX_DETAIL_CHARS]}... ({len(detail)} characters)"
        error = MalformedLogLine(self.source, line, reason, detail)
        self.stats.errors[reason] += 1
        if len(self.stats.kept) < MAX_KEPT_ERRORS:
            self.stats.kept.append(error)
        self.reasons[reason] += 1
        if self.reasons.total() <= self.max_warnings:
            log.warning("log %s", error)
        if self.quarantine is not None and raw:
            self.quarantine.keep(self.source, offset, reason, raw)

    def finish(self) -> None:
        """Log what the per-line warnings left out: the total by reason."""
        total = self.reasons.total()
        if total > self.max_warnings:
            by_reason = ", ".join(f"{reason} {count}" for reason, count in self.reasons.most_common())
            log.warning("log %s: %d lines rejected in total (%s); only the first %d were logged one by one",
                        self.source, total, by_reason, self.max_warnings)


def decode_line(data: bytes) -> tuple[str, bool]:
    """Decode a line as UTF-8, replacing invalid bytes; return the text and whether any were."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), True
