"""Follow the configured logs live and release each round once its event time has passed.

The live agent polls a :class:`agent.tailer.LogTailer` per source and parses the new lines of
every source type (Zeek logs, sshd, Suricata EVE, Sysmon lines) into the open windows of
their families (:mod:`agent.families`). A Sysmon source also has an
:class:`agent.evtx_follow.EvtxFollower`, which reads the new records of its ``.evtx`` files. A round closes when the newest event time seen passes
its end by ``round_grace_secs``. Its windows are then scored and summarised by the replay
pipeline of :class:`agent.service.Agent`, which puts the summary in the outbox in the same
transaction that records the round.

Exactly-once rests on two rules:

- The tailer's positions, the ``.evtx`` record positions, the TSV headers and the window
  accumulators of rounds still open are stored together, as one checkpoint value, and only after the summaries of the rounds
  that closed are in the outbox. After a crash the agent resumes from the last such
  snapshot, so every line read after it is read again, and every line before it is either in
  a queued round or in the restored accumulators.
- A round recorded in the state is never released again. When a crash loses the snapshot
  that followed a release, the round closes a second time after the restart and is skipped.
  Events for a round that was already released are late: they are counted and dropped.

The checkpoint stores each open window's counters and sets, not its events. A network window
still keeps one event time per connection, because burstiness needs the gaps between them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from itertools import repeat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from agent.config import SourceSection
from agent.errors import BaselineTooSmall, DegenerateBaseline
from agent.events import Event, EventStats, LineReporter, Quarantine
from agent.families import families_of_source
from agent.families.feeding import FeedItem
from agent.malformed import MalformedInput
from agent.network import Connection, InternalNetworks, OrientationStats
from agent.service import Agent, RunReport
from agent.tailer import MAX_POLL_BYTES, LogTailer, TailCheckpoint, TailLines, TailStats
from agent.zeek import NUL_BYTE_DETAIL, first_line_of, header_of_rotated_copy, log_path_from_name, read_header
from agent.zeek_conn import decode_lines, iter_connections
from agent.zeek_conn_batch import BlockCounts
from agent.sources import make_line_parser, parse_line
from agent.evtx_follow import EvtxFollower
from agent.sysmon_files import EVTX_MAGIC, event_from_record
from agent.zeek_observables import observe_records
from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from agent.zeek_tsv import TsvHeader

log = logging.getLogger(__name__)

__all__ = ["LiveAgent", "LiveSettings", "StepReport"]

CHECKPOINT_NAME = "live"


@dataclass(frozen=True)
class LiveSettings:
    """How the live agent follows files and closes rounds.

    Attributes
    ----------
    poll_interval_secs : float, default 1.0
        Maximum wait between two polls. File-system events wake the loop earlier.
    rotate_wait_secs : float, default 5.0
        Quiet time at the end of a rotated file before it is closed.
    start_at : {"beginning", "end"}, default "beginning"
        Where files found at the first start are read from.
    round_grace_secs : int, default 300
        Event time past a round's end before the round closes. Zeek logs a connection when
        it ends, so a record can trail its start time by up to the inactivity timeout, five
        minutes for TCP by default.
    commit_interval_secs : float, default 60.0
        Maximum time between two checkpoints while no round closes, and so the most that a
        crash makes the agent read again.
    restart_horizon_rounds : int, default 24
        How many of the newest closed rounds may be sent at once. Older ones are recorded as
        ``beyond_horizon`` and not sent, so a restart on a long backlog does not flood the hub
        with stale rounds. A day of hourly rounds is still worth sharing.
    max_poll_bytes : int, default 4 MiB
        Bytes of each file, and of the event XML of all ``.evtx`` files of a source, read per
        poll. A larger backlog is read over several polls without
        waiting between them, so the lines in memory stay bounded however far behind the agent
        starts.
    """

    poll_interval_secs: float = 1.0
    rotate_wait_secs: float = 5.0
    start_at: str = "beginning"
    round_grace_secs: int = 300
    commit_interval_secs: float = 60.0
    restart_horizon_rounds: int = 24
    max_poll_bytes: int = MAX_POLL_BYTES

    def __post_init__(self) -> None:
        if self.round_grace_secs < 0:
            raise ValueError(f"round_grace_secs must be >= 0; got {self.round_grace_secs}")
        if self.commit_interval_secs <= 0:
            raise ValueError(f"commit_interval_secs must be > 0; got {self.commit_interval_secs}")
        if self.restart_horizon_rounds < 1:
            raise ValueError(f"restart_horizon_rounds must be >= 1; got {self.restart_horizon_rounds}")
        if self.max_poll_bytes < 1:
            raise ValueError(f"max_poll_bytes must be >= 1; got {self.max_poll_bytes}")


@dataclass
class StepReport:
    """Counts of one poll: lines read, events added to windows and dropped as late, rounds closed.

    ``behind`` is True when a source has more to read than one poll's ``max_poll_bytes``.
    """

    lines: int = 0
    connections: int = 0
    late: int = 0
    rounds: dict[int, str] = field(default_factory=dict)
    committed: bool = False
    behind: bool = False


def _decoded(line: bytes) -> str:
    """Decode one tailer line as :func:`agent.zeek_conn.decode_lines` decodes each."""
    return decode_lines([line])[0]


class LiveAgent:
    """Drive an :class:`Agent` from files that grow, rotate and truncate.

    Stages of :meth:`step`: reading every source's new lines, ``buffer_connections``,
    ``close_rounds`` (score, summarise and queue each round whose time has passed) and
    ``commit`` (store the snapshot described in the module docstring).
    """

    def __init__(self, agent: Agent, settings: LiveSettings = LiveSettings(), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.settings = settings
        self.clock = clock
        self.parse_stats = ParseStats()
        self.orientation = OrientationStats()
        self.late_connections = 0
        self._internal = InternalNetworks(agent.config.site.internal_networks)
        self._round_seconds = agent.config.windows.round_seconds
        self._line_numbers: dict[str, int] = defaultdict(int)

        snapshot = self._load_snapshot()
        self._headers: dict[str, list[str]] = snapshot.get("headers", {})
        # Whether each Zeek file contains JSON lines, decided by its first line as a replay decides.
        self._json_files: dict[str, bool] = snapshot.get("json_files", {})
        # Headerless TSV files whose folder was searched in vain for a copy, with the folder's mtime then.
        self._header_searches: dict[str, int] = {}
        self.event_stats = EventStats()
        self._feeder = agent.new_feeder()
        self._feeder.load_state(snapshot.get("windows", {}))
        # Snapshots written before families existed buffered whole connections.
        self._feeder.feed([Connection(**item) for item in snapshot.get("open", [])], families=("network",))
        self._released_through: int = snapshot.get("released_through", 0)
        self._watermark: float = snapshot.get("watermark", 0.0)
        # The closable rounds and window count of the last failed training of the network detector.
        self._failed_baseline: tuple[tuple[int, ...], int] | None = None
        saved_tails = snapshot.get("tail", {})
        self._tailers = [
            # start_at applies at the first start only: after it, every file is new or has a checkpoint.
            LogTailer(source.paths, start_at="beginning" if snapshot else settings.start_at,
                      poll_interval_secs=settings.poll_interval_secs,
                      rotate_wait_secs=settings.rotate_wait_secs, max_poll_bytes=settings.max_poll_bytes,
                      skip_magic=EVTX_MAGIC if source.type == "sysmon" else b"",
                      checkpoints=[TailCheckpoint.from_dict(c) for c in saved_tails.get(str(index), [])])
            for index, source in enumerate(agent.config.sources)
        ]
        saved_evtx = snapshot.get("evtx", {})
        self._evtx_followers = {
            index: EvtxFollower(source.paths, state=saved_evtx.get(str(index)),
                                start_at="beginning" if snapshot else settings.start_at,
                                max_poll_bytes=settings.max_poll_bytes)
            for index, source in enumerate(agent.config.sources) if source.type == "sysmon"
        }
        self._last_commit = clock()
        self.malformed = MalformedInput(self._tailers, Quarantine(agent.config.state_dir / "quarantine.jsonl"))
        self._source_of_path: dict[str, SourceSection] = {}
        self._quarantine = Quarantine(agent.config.state_dir / "quarantine.jsonl")
        if snapshot:
            log.info("site %s: resuming live run: %d open windows, rounds released through %s",
                     agent.config.site.id, sum(len(t.open) for t in self._feeder.tables.values()),
                     _utc(self._released_through).isoformat())

    # -- stages ----------------------------------------------------------------------------

    def step(self) -> StepReport:
        """Poll every source once, close the rounds whose time has passed and commit."""
        report = StepReport()
        runs: list[tuple[str, TailLines]] = []
        run_of_path: dict[str, TailLines] = {}
        for source, tailer in zip(self.agent.config.sources, self._tailers):
            for batch in tailer.poll_batches():
                self._source_of_path[batch.path] = source
                # A batch at offset 0 starts another file under the same path (the successor
                # of a renamed file, or a truncated one), which has its own TSV header.
                # A cut over-long line is a run of its own, so that it can be counted without
                # reaching a Zeek parser, which would take its cut end for a malformed record.
                if (batch.path not in run_of_path or batch.offset == 0 or batch.truncated
                        or run_of_path[batch.path].batches[-1].truncated):
                    run_of_path[batch.path] = TailLines()
                    runs.append((batch.path, run_of_path[batch.path]))
                run_of_path[batch.path].append(batch)
                report.lines += len(batch.lines)
            report.behind = report.behind or tailer.behind

        self.buffer_connections(runs, report)
        for index, follower in self._evtx_followers.items():
            self._read_evtx(index, follower, report)
        closed = self.close_rounds(report)

        if closed or self.clock() - self._last_commit >= self.settings.commit_interval_secs:
            self.commit()
            report.committed = True
        return report

    def buffer_connections(self, runs: Iterable[tuple[str, TailLines]], report: StepReport) -> None:
        """Parse each run of one file's new lines, in order, into the windows of open rounds."""
        for path, lines in runs:
            source = self._source_of_path[path]
            if lines.batches[0].offset == 0:
                self._line_numbers[path] = 0
            families = families_of_source(source)
            block = BlockCounts()
            if source.type == "zeek" and lines.batches[0].truncated:
                self._line_numbers[path] += 1
                line = self._line_numbers[path]
                reporter = self.malformed.reporter(path, self.parse_stats, lines, line)
                reporter.report(line, "line_too_long", f"line cut at {len(lines.batches[0].lines[0])} bytes")
                continue
            if source.type == "zeek":
                others: list[ZeekRecord] = []
                items: list[FeedItem] = self._read_connections(path, lines, families, block, others.append)
                items.extend(observe_records(others, self._feeder.observables,
                                             stats=self._feeder.observation_stats))
            else:
                items = self._read_events(path, source.type, lines)

            self._feed(items, families, block, report)
        if report.late:
            log.warning("site %s: %d events arrived after their round was released; dropped",
                        self.agent.config.site.id, report.late)

    def _feed(self, items: list[FeedItem], families: tuple[str, ...], block: BlockCounts,
              report: StepReport) -> None:
        """Add events to the windows of open rounds, count late ones and advance the watermark."""
        # An event of a released round would change a summary already sent.
        late = self._feeder.feed(items, families=families, not_before=self._released_through) + block.late
        self.late_connections += late
        report.late += late
        report.connections += len(items) + block.connections - late
        if len(items) + block.connections > late:
            newest = max((_event_time(item) for item in items), default=block.newest_ts)
            if block.newest_ts is not None:
                newest = max(newest, block.newest_ts)
            self._watermark = max(self._watermark, newest)

    def _read_evtx(self, index: int, follower: EvtxFollower, report: StepReport) -> None:
        """Feed the new records of one Sysmon source's ``.evtx`` files into the windows of open rounds."""
        source = f"sources[{index}]"
        reporters: dict[str, LineReporter] = {}

        def reporter_of(path: str) -> LineReporter:
            if path not in reporters:
                reporters[path] = LineReporter(path, self.event_stats, quarantine=self._quarantine)
            return reporters[path]

        errors_before = Counter(self.event_stats.errors)
        events: list[FeedItem] = []
        for path, record in follower.poll(reporter_of):
            report.lines += 1
            event = event_from_record(record.xml, record.record_id, path=path, stats=self.event_stats,
                                      reporter=reporter_of(path))
            if event is not None:
                events.append(event)
        for reporter in reporters.values():
            reporter.finish()
        for reason, count in (self.event_stats.errors - errors_before).items():
            self.malformed.counts[(source, reason)] += count

        self._feed(events, families_of_source(self.agent.config.sources[index]), BlockCounts(), report)
        report.behind = report.behind or follower.behind

    def close_rounds(self, report: StepReport) -> list[int]:
        """Release every round whose end plus the grace time lies before the watermark."""
        round_seconds = self._round_seconds
        closable = sorted(start for start in self._feeder.open_rounds(round_seconds)
                          if start + round_seconds + self.settings.round_grace_secs <= self._watermark)
        if not closable:
            return []

        # Old rounds of a backlog are recorded but not sent.
        horizon = closable[-1] - (self.settings.restart_horizon_rounds - 1) * round_seconds
        beyond = [start for start in closable if start < horizon]
        for start in beyond:
            if self.agent.state.round_status(start) is None:
                self.agent.state.record_round(start, "beyond_horizon")
            report.rounds[start] = "beyond_horizon"
        if beyond:
            log.warning("site %s: %d rounds older than the restart horizon of %d rounds not sent",
                        self.agent.config.site.id, len(beyond), self.settings.restart_horizon_rounds)
            # Dropped now, not after the detectors have trained: a round left open would be
            # found beyond the horizon, and logged, again at every poll until then.
            self._feeder.discard(set(beyond), round_seconds=round_seconds)
            self._released_through = max(self._released_through, max(beyond) + round_seconds)
        closable = [start for start in closable if start >= horizon]

        # The detectors train on the first baseline rounds, so they wait until those have closed.
        untrained = [f for f in self._feeder.tables if not self.agent.scorer.is_trained(f)]
        if untrained and len(closable) < self.agent.config.detector.baseline_rounds:
            return sorted(beyond)
        if "network" in untrained and not self._network_baseline_ready(closable):
            return sorted(beyond)

        windows = self._feeder.close(set(closable), round_seconds=round_seconds)
        scored = {family: self.agent.scorer.score(family, family_windows)
                  for family, family_windows in windows.items()}
        run = RunReport(site_id=self.agent.config.site.id)
        self.agent.release_rounds(scored, run)
        report.rounds.update(run.rounds)

        done = set(closable) | set(beyond)
        self._released_through = max(self._released_through, max(done) + round_seconds)
        return sorted(done)

    def _network_baseline_ready(self, closable: list[int]) -> bool:
        """Train the network detector on the closable rounds' windows and return whether it could.

        Training on too few windows, or on windows whose features are all constant, raises,
        which would stop the agent at every start on the same data. A quiet site, or a stray
        line of an old time, therefore keeps its rounds open until newer rounds add windows,
        or until the restart horizon drops them. The windows stay open while they are tried.
        """
        table, rounds = self._feeder.tables["network"], set(closable)
        windows = [window for key, accumulator in table.open.items()
                   if key[1] - key[1] % self._round_seconds in rounds
                   and (window := table.close_accumulator(accumulator)) is not None]
        windows.sort(key=lambda window: (window.start, window.entity))

        # Training is tried again only once the rounds or their windows changed.
        attempt = (tuple(closable), len(windows))
        if attempt == self._failed_baseline:
            return False
        try:
            self.agent.scorer.score("network", windows)
        except (BaselineTooSmall, DegenerateBaseline) as err:
            log.warning("site %s: network detector not trained on %d closable rounds: %s. They stay open until "
                        "newer rounds add windows", self.agent.config.site.id, len(closable), err)
            self._failed_baseline = attempt
            return False
        return True

    def commit(self) -> None:
        """Store tail positions, TSV headers and open rounds as one checkpoint value."""
        snapshot = {
            "tail": {str(index): [c.to_dict() for c in tailer.checkpoints()]
                     for index, tailer in enumerate(self._tailers)},
            "evtx": {str(index): follower.to_state() for index, follower in self._evtx_followers.items()},
            "headers": self._headers,
            "json_files": self._json_files,
            "windows": self._feeder.to_state(),
            "released_through": self._released_through,
            "watermark": self._watermark,
        }
        self.agent.state.set_checkpoint(CHECKPOINT_NAME, json.dumps(snapshot, separators=(",", ":")))
        self._last_commit = self.clock()
        self._write_metrics()

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, deliver: bool = True,
            on_step: Callable[[StepReport], None] | None = None) -> None:
        """Step until ``stop`` is set, delivering the outbox after each released round.

        ``on_step`` is called after every step, in this thread. The service loop uses it to
        deliver with backoff, ping the watchdog, refresh its metrics and handle a reload.
        """
        log.info("site %s: following %d sources live (poll every %.1f s, grace %d s)", self.agent.config.site.id,
                 len(self._tailers), self.settings.poll_interval_secs, self.settings.round_grace_secs)
        try:
            while not stop.is_set():
                report = self.step()
                if report.rounds and deliver:
                    self.agent.deliver(RunReport(site_id=self.agent.config.site.id))
                if on_step is not None:
                    on_step(report)
                # A backlog is read slice after slice, with no wait between.
                if not report.behind:
                    stop.wait(self.settings.poll_interval_secs)
        finally:
            self.commit()
            for tailer in self._tailers:
                tailer.close()
            log.info("site %s: live run stopped; state committed", self.agent.config.site.id)

    def tail_stats(self) -> list[TailStats]:
        """Return the counters of each source's tailer, in the order of the configured sources."""
        return [tailer.stats for tailer in self._tailers]

    # -- helpers ---------------------------------------------------------------------------

    def _read_events(self, path: str, source_type: str, lines: TailLines) -> list[FeedItem]:
        """Return the events of one sshd, Suricata or Sysmon file's new lines."""
        # Year-less sshd timestamps of a followed file are placed before the time of each read.
        # A time kept from the first read would put later months, and New Year, a year back.
        parser = make_line_parser(source_type, reference=datetime.now(timezone.utc))
        source = f"sources[{self.agent.config.sources.index(self._source_of_path[path])}]"
        reporter = LineReporter(path, self.event_stats, quarantine=self._quarantine)
        errors_before = Counter(self.event_stats.errors)
        events: list[FeedItem] = []
        for line in lines[:]:
            self._line_numbers[path] += 1
            event = parse_line(parser, line.data, truncated=line.truncated, line=self._line_numbers[path],
                               offset=line.offset, stats=self.event_stats, reporter=reporter)
            if event is not None:
                events.append(event)
        reporter.finish()

        # The metrics count malformed lines by configured source, as for Zeek logs.
        for reason, count in (self.event_stats.errors - errors_before).items():
            self.malformed.counts[(source, reason)] += count
        return events

    def _read_connections(self, path: str, lines: TailLines, families: tuple[str, ...], block: BlockCounts,
                          on_other_record: Callable[[ZeekRecord], None]) -> list[FeedItem]:
        """Read one file's new lines with the file's TSV header and return the connections left to feed.

        Conn lines go straight to the network windows (:meth:`FamilyFeeder.add_tsv_conn_lines` and
        :meth:`FamilyFeeder.add_json_conn_lines`) and are counted in ``block``. The list then
        contains only connections read from the stored TSV header lines, and those have no data
        rows. Lines of a source that does not feed the network family become connections in the list.
        """
        data = lines.data()
        first_line = self._line_numbers[path] + 1
        self._line_numbers[path] += len(data)
        reporter = self.malformed.reporter(path, self.parse_stats, lines, first_line if data else 1)
        is_json = self._is_json_file(path, data, starts_file=lines.batches[0].offset == 0)

        # A line with a NUL byte is reported as a replay reports it, and the lines around it are read.
        if not any(map(bytes.__contains__, data, repeat(b"\0"))):
            return self._read_connection_lines(path, data, first_line, is_json, reporter, families, block,
                                               on_other_record)
        items: list[FeedItem] = []
        start = 0
        for index in [index for index, line in enumerate(data) if b"\0" in line] + [len(data)]:
            if start < index:
                items += self._read_connection_lines(path, data[start:index], first_line + start, is_json, reporter,
                                                     families, block, on_other_record)
            if index < len(data):
                reporter.report(first_line + index, "nul_byte", NUL_BYTE_DETAIL)
            start = index + 1
        return items

    def _is_json_file(self, path: str, data: list[bytes], *, starts_file: bool) -> bool:
        """Return whether a Zeek file contains JSON lines: its first non-blank line without a NUL starts an object.

        The result is kept for the file, so a damaged line later on does not change how the
        lines after it are read. A run that starts the file decides again.
        """
        if starts_file:
            self._json_files.pop(path, None)
        elif path not in self._json_files:
            # A run past the file's start: a stored TSV header, or else the file's own first line, decides.
            first = "#" if self._headers.get(path) else first_line_of(Path(path))
            if first:
                self._json_files[path] = first.lstrip().startswith("{")
        if path not in self._json_files:
            for line in data:
                text = _decoded(line) if b"\0" not in line else ""
                if text.strip():
                    self._json_files[path] = text.lstrip().startswith("{")
                    break
        return self._json_files.get(path, False)

    def _borrowed_header(self, path: str) -> list[str]:
        """Return a header for rows of a TSV file that came without one, or [].

        The file's own start has it when the agent began past it (``start_at: end``, or a lost
        checkpoint). A file that copytruncate emptied has none, and its newest rotated copy
        does. A failed search is repeated only once the folder changes.
        """
        own = read_header(Path(path)) or []
        if any(text.startswith("#fields") for text in own):
            log.info("log %s: reading its rows with the header at its start", path)
            return own
        try:
            folder_version = Path(path).parent.stat().st_mtime_ns
        except OSError:
            folder_version = None
        if folder_version is not None and self._header_searches.get(path) == folder_version:
            return []
        found = header_of_rotated_copy(Path(path))
        if found is None:
            if folder_version is not None:
                self._header_searches[path] = folder_version
            return []
        log.info("log %s has rows but no header; using the header of %s, its newest rotated copy", path, found[0])
        return found[1]

    def _read_connection_lines(self, path: str, data: list[bytes], first_line: int, is_json: bool,
                               reporter: MalformedLineReporter, families: tuple[str, ...], block: BlockCounts,
                               on_other_record: Callable[[ZeekRecord], None]) -> list[FeedItem]:
        """Read consecutive lines of one file from line ``first_line`` on, as :meth:`_read_connections` describes.

        JSON lines go to the windows as bytes, undecoded.
        """
        default_path = log_path_from_name(Path(path))

        # A TSV file writes its header once, at its start, so later reads reuse the stored one.
        if not is_json:
            texts = decode_lines(data)
            numbered = list(zip(range(first_line, first_line + len(texts)), texts))
            header = self._headers.get(path, [])
            header_lines = set()
            for text in texts:
                if text[:1] != "#":
                    continue
                header_lines.add(text)
                if text.startswith("#separator"):
                    header = []
                if text.split("\t", 1)[0].split(" ", 1)[0] != "#close":
                    header.append(text)
            if not header and any(text[:1] not in ("#", "") for text in texts):
                header = self._borrowed_header(path)
            self._headers[path] = header[-16:]
            stored = [(0, text) for text in self._headers[path] if text not in header_lines]
            tsv_header = TsvHeader()
            # The stored lines only rebuild the header. They hold no data rows, and they were
            # counted and reported when they were read, so they go to throwaway counters.
            replayed = ParseStats()
            connections: list[FeedItem] = list(iter_connections(
                stored, is_json=False, source=path, default_path=default_path, internal=self._internal,
                stats=replayed, orientation=OrientationStats(),
                reporter=MalformedLineReporter(path, replayed, max_warnings=0),
                on_other_record=on_other_record, header=tsv_header))
            counts = self._feeder.add_tsv_conn_lines(
                texts, first_line, families=families, header=tsv_header, source=path, default_path=default_path,
                stats=self.parse_stats, orientation=self.orientation, reporter=reporter,
                not_before=self._released_through, on_other_record=on_other_record)
            if counts is not None:
                _add_counts(block, counts)
                return connections
            return connections + list(iter_connections(
                numbered, is_json=False, source=path, default_path=default_path, internal=self._internal,
                stats=self.parse_stats, orientation=self.orientation, reporter=reporter,
                on_other_record=on_other_record, header=tsv_header))
        counts = self._feeder.add_json_conn_lines(
            data, first_line, families=families, source=path, default_path=default_path, stats=self.parse_stats,
            orientation=self.orientation, reporter=reporter, not_before=self._released_through,
            on_other_record=on_other_record)
        if counts is not None:
            _add_counts(block, counts)
            return []
        numbered = list(enumerate(decode_lines(data), start=first_line))
        return list(iter_connections(numbered, is_json=True, source=path, default_path=default_path,
                                     internal=self._internal, stats=self.parse_stats, orientation=self.orientation,
                                     reporter=reporter, on_other_record=on_other_record))

    def _write_metrics(self) -> None:
        """Refresh ``metrics.prom`` in the state folder, as a replay run does at its end."""
        metrics = self.agent.metrics
        metrics.lines_read = self.parse_stats.records
        metrics.lines_malformed = dict(self.parse_stats.malformed)
        metrics.connections = self.orientation.connections
        metrics.conn_records_skipped = self.orientation.missing_fields
        metrics.events_late = self.late_connections
        metrics.outbox_size = len(self.agent.state.pending())
        metrics.write(self.agent.config.state_dir / "metrics.prom")

    def _load_snapshot(self) -> dict:
        stored = self.agent.state.checkpoint(CHECKPOINT_NAME)
        return json.loads(stored) if stored else {}


def _add_counts(block: BlockCounts, counts: BlockCounts) -> None:
    block.connections += counts.connections
    block.late += counts.late
    if counts.newest_ts is not None:
        block.observe(counts.newest_ts)


def _event_time(item: FeedItem) -> float:
    return item.ts.timestamp() if isinstance(item, Event) else item.ts


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
