"""Malformed lines in the live agent: counts per source and reason, a quarantine sample, and
warnings limited per file and minute.

A replay reads a file once, so its reporter can log the first few bad lines and a total at the
end. A followed file never ends, and a writer with a systematic defect can emit a bad line every
few microseconds for months. Here each file therefore gets at most ``max_warnings`` warnings per
``interval_secs``, and the lines left out are summed up in one line per file when the interval
has passed. Every bad line is still counted, and its raw bytes go to the quarantine file until
that file reaches its size limit.

Notes
-----
The line number in a warning counts the lines this process has read from the file, so after a
restart it starts again at the checkpoint. The byte offset printed beside it is exact.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.errors import MalformedLogLine
from agent.events import Quarantine
from agent.tailer import LogTailer, TailLine
from agent.zeek_records import MAX_DETAIL_CHARS, MalformedLineReporter, ParseStats

log = logging.getLogger(__name__)

__all__ = ["MalformedInput"]


@dataclass
class _FileWarnings:
    """Warnings of one file in the current interval."""

    interval_start: float
    logged: int = 0
    left_out: Counter[str] = field(default_factory=Counter)


class MalformedInput:
    """Count, sample and report the malformed lines of every followed file.

    Parameters
    ----------
    tailers : sequence of LogTailer
        The tailers of the configured sources, in order. A file's source is the tailer that
        has it open, named ``sources[<index>]``.
    quarantine : Quarantine or None
        Where the raw bytes of malformed lines are kept.
    max_warnings : int, default 5
        Warnings per file and interval, each naming its line. Five show what is wrong with a
        file without flooding the agent's log.
    interval_secs : float, default 60.0
        Length of the interval.
    clock : callable, default time.monotonic
    """

    def __init__(self, tailers: Sequence[LogTailer], quarantine: Quarantine | None, *, max_warnings: int = 5,
                 interval_secs: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.tailers = tailers
        self.quarantine = quarantine
        self.max_warnings = max_warnings
        self.interval_secs = interval_secs
        self.clock = clock
        # Malformed lines by (source, reason) since this object was built.
        self.counts: Counter[tuple[str, str]] = Counter()
        self._sources: dict[str, str] = {}
        self._warnings: dict[str, _FileWarnings] = {}

    def reporter(self, path: str, stats: ParseStats, lines: Sequence[TailLine],
                 first_line: int) -> MalformedLineReporter:
        """Return the reporter for one batch of ``path``'s lines, numbered from ``first_line``."""
        return _BatchReporter(self, path, stats, lines, first_line)

    def flush(self) -> None:
        """Log the lines left out of the warnings of every interval that has ended."""
        now = self.clock()
        for path, warnings in self._warnings.items():
            if now - warnings.interval_start >= self.interval_secs:
                self._end_interval(path, warnings, now)

    def record(self, path: str, line: int, reason: str, detail: str, raw: TailLine | None) -> None:
        """Count one malformed line, keep its bytes and warn unless the file's limit is reached."""
        self.counts[(self._source_of(path), reason)] += 1
        if self.quarantine is not None and raw is not None:
            self.quarantine.keep(path, raw.offset, reason, raw.data)

        now = self.clock()
        warnings = self._warnings.get(path)
        if warnings is None:
            warnings = self._warnings[path] = _FileWarnings(now)
        elif now - warnings.interval_start >= self.interval_secs:
            self._end_interval(path, warnings, now)
        if warnings.logged < self.max_warnings:
            warnings.logged += 1
            offset = f" (byte offset {raw.offset})" if raw is not None else ""
            log.warning("log %s line %d%s: %s; line skipped", path, line, offset, detail)
        else:
            warnings.left_out[reason] += 1

    def _end_interval(self, path: str, warnings: _FileWarnings, now: float) -> None:
        if warnings.left_out:
            by_reason = ", ".join(f"{reason} {count}" for reason, count in warnings.left_out.most_common())
            log.warning("log %s: %d more malformed lines skipped in the last %.0f s (%s); the first %d of that "
                        "interval were logged one by one", path, warnings.left_out.total(), self.interval_secs,
                        by_reason, self.max_warnings)
        warnings.interval_start, warnings.logged = now, 0
        warnings.left_out.clear()

    def _source_of(self, path: str) -> str:
        source = self._sources.get(path)
        if source is None:
            source = next((f"sources[{index}]" for index, tailer in enumerate(self.tailers)
                           if any(c.path == path and not c.finished for c in tailer.checkpoints())), "unknown")
            self._sources[path] = source
        return source


class _BatchReporter(MalformedLineReporter):
    """The parsers' reporter interface, passing each malformed line on to :class:`MalformedInput`."""

    def __init__(self, owner: MalformedInput, path: str, stats: ParseStats, lines: Sequence[TailLine],
                 first_line: int) -> None:
        super().__init__(path, stats)
        self._owner = owner
        self._lines = lines
        self._first_line = first_line

    def report(self, line: int, reason: str, detail: str) -> None:
        if len(detail) > MAX_DETAIL_CHARS:
            detail = f"{detail[:MAX_DETAIL_CHARS]}... ({len(detail)} characters)"
        self.stats.add_malformed(MalformedLogLine(self.source, line, reason, detail))
        self.reasons[reason] += 1
        index = line - self._first_line
        raw = self._lines[index] if 0 <= index < len(self._lines) else None
        self._owner.record(self.source, line, reason, detail, raw)
