"""The Zeek reader's output record, its counters and its rate-limited malformed-line warnings.

A log with a systematic defect can have a malformed line every few microseconds, so the reader
logs only the first few per file and then one summary line with the counts by reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.errors import MalformedLogLine

if TYPE_CHECKING:
    from agent.events import Quarantine

log = logging.getLogger(__name__)

# Enough to show what is wrong with a file without flooding the agent's log.
MAX_WARNINGS_PER_FILE = 5

# Bounds the memory of a long-lived ParseStats that is shared across many files.
MAX_KEPT_ERRORS = 100

# A detail quotes the offending value, which can be up to a whole line long.
MAX_DETAIL_CHARS = 300

# Lines whose bytes a reporter keeps for its quarantine, and their total size. Parsers report
# a line before they read far past it: the JSON detection looks at the first non-blank line, a
# header at most a few lines. The newest line is always kept, however long.
RECENT_LINES = 1024
RECENT_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class ZeekRecord:
    """One Zeek log entry with typed values.

    Attributes
    ----------
    log_path : str
        The Zeek log stream, such as ``"conn"``. It comes from ``#path`` (TSV) or ``_path``
        (JSON), and otherwise from the file name up to its first dot.
    fields : dict[str, Any]
        Values by Zeek's dotted field name (``id.orig_h``). An unset TSV value is None; a JSON
        key that is absent is absent, so read optional fields with ``.get``.
    source : str
        The file the record was read from.
    line : int
        The 1-based line number in that file (after decompression).
    """

    log_path: str
    fields: dict[str, Any]
    source: str
    line: int


@dataclass(slots=True)
class ParseStats:
    """Counters for one or more calls of ``iter_zeek_records``. Pass the same object to sum files.

    Attributes
    ----------
    records : int
        Records yielded.
    header_lines : int
        TSV ``#`` metadata lines read (``#separator`` to ``#close``).
    skipped : int
        Lines that hold no record by design: blank lines and ``#`` lines with an unknown
        directive.
    invalid_utf8 : int
        Lines whose bytes were not UTF-8. Their records are still yielded, with each invalid
        byte sequence replaced by U+FFFD.
    nul_bytes_skipped : int
        NUL bytes skipped where a line starts: the hole a writer without ``O_APPEND`` leaves
        after a copytruncate. The rest of such a line is read. A NUL elsewhere in a line makes
        it ``nul_byte``.
    malformed : Counter[str]
        Lines skipped because they could not become a record, by reason: ``no_header``,
        ``invalid_header``, ``column_count``, ``invalid_value:<field>``,
        ``implausible_timestamp``, ``invalid_json``, ``not_json_object``, ``nul_byte``,
        ``line_too_long`` and ``truncated_gzip``.
    errors : list[MalformedLogLine]
        The first ``MAX_KEPT_ERRORS`` malformed lines, with file, line, reason and detail.
    """

    records: int = 0
    header_lines: int = 0
    skipped: int = 0
    invalid_utf8: int = 0
    nul_bytes_skipped: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    errors: list[MalformedLogLine] = field(default_factory=list)

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def add_malformed(self, error: MalformedLogLine) -> None:
        """Count one malformed line and keep it if fewer than ``MAX_KEPT_ERRORS`` are kept."""
        self.malformed[error.reason] += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(error)


class MalformedLineReporter:
    """Count the malformed lines of one file and log the first few of them.

    Parameters
    ----------
    source : str
        The file, named in every message.
    stats : ParseStats
        Where the lines are counted.
    max_warnings : int, default MAX_WARNINGS_PER_FILE
        Warnings logged one per line before the reporter switches to a summary at the end.
    quarantine : Quarantine or None, default None
        Where the raw bytes of malformed lines are kept. The reader passes each line's bytes
        to :meth:`remember` before it is parsed, because parsers report line numbers only.
    """

    def __init__(self, source: str, stats: ParseStats, *, max_warnings: int = MAX_WARNINGS_PER_FILE,
                 quarantine: Quarantine | None = None) -> None:
        self.source = source
        self.stats = stats
        self.max_warnings = max_warnings
        self.quarantine = quarantine
        self.reasons: Counter[str] = Counter()
        self.invalid_utf8_lines = 0
        # Line number to (byte offset, raw bytes) of the latest lines read, for the quarantine.
        self._recent: dict[int, tuple[int, bytes]] = {}
        self._recent_bytes = 0

    def remember(self, line: int, offset: int, raw: bytes) -> None:
        """Keep a line's offset and bytes while it is among the latest ``RECENT_LINES`` and ``RECENT_BYTES``."""
        if self.quarantine is None:
            return
        self._recent[line] = (offset, raw)
        self._recent_bytes += len(raw)
        while len(self._recent) > 1 and (len(self._recent) > RECENT_LINES or self._recent_bytes > RECENT_BYTES):
            self._recent_bytes -= len(self._recent.pop(next(iter(self._recent)))[1])

    def report(self, line: int, reason: str, detail: str) -> None:
        """Count a malformed line, and log it while this file is under the warning limit."""
        if len(detail) > MAX_DETAIL_CHARS:
            detail = f"{detail[:MAX_DETAIL_CHARS]}... ({len(detail)} characters)"
        error = MalformedLogLine(self.source, line, reason, detail)
        self.stats.add_malformed(error)
        self.reasons[reason] += 1
        if self.quarantine is not None and line in self._recent:
            offset, raw = self._recent.pop(line)
            self._recent_bytes -= len(raw)
            self.quarantine.keep(self.source, offset, reason, raw)
        if self.reasons.total() <= self.max_warnings:
            log.warning("zeek log %s", error)

    def count_invalid_utf8(self) -> None:
        self.stats.invalid_utf8 += 1
        self.invalid_utf8_lines += 1

    def finish(self) -> None:
        """Log what the per-line warnings left out: the total by reason, and replaced bytes."""
        total = self.reasons.total()
        if total > self.max_warnings:
            by_reason = ", ".join(f"{reason} {count}" for reason, count in self.reasons.most_common())
            log.warning("zeek log %s: %d malformed lines skipped in total (%s); only the first %d were logged "
                        "one by one", self.source, total, by_reason, self.max_warnings)
        if self.invalid_utf8_lines:
            log.warning("zeek log %s: %d lines held bytes that are not UTF-8; each such byte sequence was "
                        "replaced by U+FFFD", self.source, self.invalid_utf8_lines)
