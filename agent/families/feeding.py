"""Route parsed records of every source type into the open windows of their families.

One :class:`FamilyFeeder` contains the window tables of the configured families. Replay and live
mode both call it: replay with whole files, live mode with the lines each poll read. Records
of a family that is not configured for their source are counted in ``unused`` and dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from agent.events import Event
from agent.families.authentication import AuthenticationWindows, attempt_from_sshd, attempt_from_zeek
from agent.families.network import NetworkWindows, connection_from_flow, flow_start, observables_of_suricata
from agent.families.process import ProcessWindows
from agent.features import Window
from agent.network import Connection, InternalNetworks, OrientationStats, orient_connections
from agent.observables import ObservableFilter
from agent.zeek_conn import RecordCallback
from agent.zeek import JsonReader, TsvReader
from agent.zeek_conn_batch import BlockCounts, add_tsv_lines_to_windows
from agent.zeek_conn_json_batch import add_json_lines_to_windows
from agent.zeek_observables import OBSERVED_LOGS, ObservationStats, ZeekObservation, observe_records
from agent.zeek_records import MalformedLineReporter, ParseStats, ZeekRecord
from agent.zeek_tsv import TsvHeader

__all__ = ["FamilyFeeder", "FeedItem"]

# A parsed item of any source: a conn record's connection, an application log's
# observation, or a normalised event of sshd, Suricata or Sysmon.
FeedItem = Connection | ZeekObservation | Event

# Lines a replay run reads before adding them to the windows at once: enough to amortise the
# per-block work, and a few MiB of text for conn lines (TSV or JSON).
TSV_BLOCK_LINES = 1 << 14


class FamilyFeeder:
    """The open windows of every configured family, and the routing of records into them.

    Parameters
    ----------
    families : tuple of str
        The configured families (see :func:`agent.families.configured_families`).
    window_seconds : int
        Window length.
    internal_networks, internal_domains : tuple of str
        The site's own address ranges and DNS zones, which decide entities and which
        observables may leave the site.
    """

    def __init__(self, families: tuple[str, ...], *, window_seconds: int, internal_networks: tuple[str, ...],
                 internal_domains: tuple[str, ...] = ()) -> None:
        self.families = families
        self.internal = InternalNetworks(internal_networks)
        self.observables = ObservableFilter(self.internal, internal_domains)
        self.tables = {}
        if "network" in families:
            self.tables["network"] = NetworkWindows(window_seconds)
        if "authentication" in families:
            self.tables["authentication"] = AuthenticationWindows(window_seconds)
        if "process" in families:
            self.tables["process"] = ProcessWindows(window_seconds)
        self.orientation = OrientationStats()
        self.observation_stats = ObservationStats()
        self.fed: Counter[str] = Counter()  # items fed, by family
        self.unused: Counter[str] = Counter()  # items read but feeding no configured family, by kind

    def parse_zeek(self, records: Iterable[ZeekRecord], *, orientation: OrientationStats | None = None
                   ) -> list[FeedItem]:
        """Return the connections of conn records and the observations of application logs.

        ``orientation`` receives this call's conn counts, which are also added to ``self.orientation``.
        """
        records = list(records)
        stats = orientation if orientation is not None else OrientationStats()
        items: list[FeedItem] = list(orient_connections(records, self.internal, stats=stats))
        self.orientation.connections += stats.connections
        self.orientation.both_external += stats.both_external
        self.orientation.missing_fields += stats.missing_fields
        items.extend(observe_records((r for r in records if r.log_path in OBSERVED_LOGS), self.observables,
                                     stats=self.observation_stats))
        for record in records:
            if record.log_path != "conn" and record.log_path not in OBSERVED_LOGS:
                self.unused[f"zeek:{record.log_path}"] += 1
        return items

    def feed(self, items: Iterable[FeedItem], *, families: tuple[str, ...], shift_secs: float = 0.0,
             not_before: float | None = None) -> int:
        """Add items of one source to the windows of ``families`` (the source's own families).

        ``shift_secs`` moves event times (replay only). Items earlier than ``not_before`` are
        not added; the count of those is returned.
        """
        late = 0
        for item in items:
            ts = _time_of(item) + shift_secs
            if not_before is not None and ts < not_before:
                late += 1
                continue
            self._route(item, ts, shift_secs, families)
        return late

    def add_tsv_conn_lines(self, texts: list[str], first_line: int, *, families: tuple[str, ...],
                           header: TsvHeader, source: str, default_path: str, stats: ParseStats,
                           orientation: OrientationStats, reporter: MalformedLineReporter,
                           not_before: float | None = None,
                           on_other_record: RecordCallback | None = None) -> BlockCounts | None:
        """Add the connections of consecutive TSV lines of one file straight to the network windows.

        The windows, counts and reports are those of parsing the lines with
        :func:`agent.zeek_conn.iter_connections` and passing the connections to :meth:`feed`
        without a shift (see :mod:`agent.zeek_conn_batch`). ``header`` is the file's TSV header
        state, updated in place. Returns None, having read nothing, when ``families`` or the
        configured ones leave out the network family. The caller then reads the lines one
        connection at a time, so that :meth:`feed` counts them as unused.
        """
        table = self._network_table(families)
        if table is None:
            return None
        counts = add_tsv_lines_to_windows(
            texts, first_line, header=header, source=source, default_path=default_path, internal=self.internal,
            stats=stats, orientation=orientation, reporter=reporter, window_seconds=table.window_seconds,
            accumulator_for=table.connections_at, not_before=not_before, on_other_record=on_other_record)
        self.fed["network"] += counts.connections - counts.late
        return counts

    def add_json_conn_lines(self, lines: list[str] | list[bytes], first_line: int, *, families: tuple[str, ...],
                            source: str, default_path: str, stats: ParseStats, orientation: OrientationStats,
                            reporter: MalformedLineReporter, not_before: float | None = None,
                            on_other_record: RecordCallback | None = None) -> BlockCounts | None:
        """Add the connections of consecutive Zeek JSON lines of one file straight to the network windows.

        The JSON counterpart of :meth:`add_tsv_conn_lines` (see :mod:`agent.zeek_conn_json_batch`),
        with the same results as :func:`agent.zeek_conn.iter_connections` followed by :meth:`feed`.
        ``lines`` may be the tailer's bytes lines, which are read as
        :func:`agent.zeek_conn.decode_lines` decodes them but faster, because most are never decoded.
        Returns None, having read nothing, when ``families`` or the configured ones leave out
        the network family.
        """
        table = self._network_table(families)
        if table is None:
            return None
        counts = add_json_lines_to_windows(
            lines, first_line, source=source, default_path=default_path, internal=self.internal, stats=stats,
            orientation=orientation, reporter=reporter, window_seconds=table.window_seconds,
            accumulator_for=table.connections_at, not_before=not_before, on_other_record=on_other_record)
        self.fed["network"] += counts.connections - counts.late
        return counts

    def json_reader(self, families: tuple[str, ...], orientation: OrientationStats) -> JsonReader | None:
        """Return a JSON reader for :func:`agent.zeek.iter_zeek_records` that adds conn lines to the windows.

        Like :meth:`tsv_reader`, the reader yields only the records of logs other than conn and
        adds the connections of conn lines with :meth:`add_json_conn_lines`, unshifted. Returns
        None when ``families`` leave out the network family.
        """
        if self._network_table(families) is None:
            return None

        def read(lines: Iterable[tuple[int, str]], *, source: str, default_path: str, stats: ParseStats,
                 reporter: MalformedLineReporter) -> Iterator[ZeekRecord]:
            for first_line, texts in _consecutive_lines(lines, TSV_BLOCK_LINES):
                others: list[ZeekRecord] = []
                self.add_json_conn_lines(texts, first_line, families=families, source=source,
                                         default_path=default_path, stats=stats, orientation=orientation,
                                         reporter=reporter, on_other_record=others.append)
                yield from others
        return read

    def tsv_reader(self, families: tuple[str, ...], orientation: OrientationStats) -> TsvReader | None:
        """Return a TSV reader for :func:`agent.zeek.iter_zeek_records` that adds conn lines to the windows.

        The reader yields only the records of logs other than conn, and adds the connections
        of conn lines with :meth:`add_tsv_conn_lines`, unshifted. Returns None when
        ``families`` leave out the network family.
        """
        if self._network_table(families) is None:
            return None

        def read(lines: Iterable[tuple[int, str]], *, source: str, default_path: str, stats: ParseStats,
                 reporter: MalformedLineReporter) -> Iterator[ZeekRecord]:
            header = TsvHeader()
            for first_line, texts in _consecutive_lines(lines, TSV_BLOCK_LINES):
                others: list[ZeekRecord] = []
                self.add_tsv_conn_lines(texts, first_line, families=families, header=header, source=source,
                                        default_path=default_path, stats=stats, orientation=orientation,
                                        reporter=reporter, on_other_record=others.append)
                yield from others
        return read

    def _network_table(self, families: tuple[str, ...]) -> NetworkWindows | None:
        table = self.tables.get("network")
        return table if table is not None and "network" in families else None

    def close(self, rounds: set[int] | None = None, *, round_seconds: int = 1) -> dict[str, list[Window]]:
        """Close the windows of ``rounds`` (all when None) and return them by family."""
        return {family: table.close(rounds, round_seconds=round_seconds) for family, table in self.tables.items()}

    def open_rounds(self, round_seconds: int) -> set[int]:
        """Return the starts of the rounds that have an open window in any family."""
        found: set[int] = set()
        for table in self.tables.values():
            found |= table.rounds(round_seconds)
        return found

    def discard(self, rounds: set[int], *, round_seconds: int) -> None:
        for table in self.tables.values():
            table.discard(rounds, round_seconds=round_seconds)

    def to_state(self) -> dict[str, Any]:
        return {family: table.to_state() for family, table in self.tables.items()}

    def load_state(self, state: dict[str, Any]) -> None:
        for family, items in state.items():
            if family in self.tables:
                self.tables[family].load_state(items)

    def _route(self, item: FeedItem, ts: float, shift_secs: float, families: tuple[str, ...]) -> None:
        if isinstance(item, Connection):
            self._to_network(families, "zeek:conn", lambda t: t.add_connection(
                replace(item, ts=ts) if shift_secs else item))
        elif isinstance(item, ZeekObservation):
            self._route_observation(item, ts, families)
        elif item.source_type == "suricata":
            self._route_suricata(item, ts, families)
        elif item.source_type == "sshd":
            attempt = attempt_from_sshd(item, self.observables)
            if attempt is not None:
                self._to("authentication", families, "sshd", lambda t: t.add(replace(attempt, ts=ts)))
        elif item.source_type == "sysmon":
            event = replace(item, ts=_shifted(item, shift_secs)) if shift_secs else item
            self._to("process", families, "sysmon", lambda t: t.add(event, self.observables))

    def _route_observation(self, item: ZeekObservation, ts: float, families: tuple[str, ...]) -> None:
        if item.entity is None:
            return
        if item.log_path == "ssh":
            attempt = attempt_from_zeek(item)
            if attempt is not None and "authentication" in families:
                self._to("authentication", families, "zeek:ssh", lambda t: t.add(replace(attempt, ts=ts)))
                return
        self._to_network(families, f"zeek:{item.log_path}",
                         lambda t: t.add_observables(item.entity, ts, item.observables))

    def _route_suricata(self, item: Event, ts: float, families: tuple[str, ...]) -> None:
        if item.kind == "flow":
            connection = connection_from_flow(item, self.internal)
            if connection is not None:
                self._to_network(families, "suricata:flow", lambda t: t.add_connection(replace(connection, ts=ts)))
        elif item.kind in ("dns", "http", "tls"):
            entity, keys = observables_of_suricata(item, self.observables)
            if entity is not None:
                self._to_network(families, f"suricata:{item.kind}", lambda t: t.add_observables(entity, ts, keys))
        else:
            self.unused[f"suricata:{item.kind}"] += 1

    def _to_network(self, families: tuple[str, ...], kind: str, add: Any) -> None:
        self._to("network", families, kind, add)

    def _to(self, family: str, families: tuple[str, ...], kind: str, add: Any) -> None:
        table = self.tables.get(family)
        if table is None or family not in families:
            self.unused[kind] += 1
            return
        add(table)
        self.fed[family] += 1


def _consecutive_lines(lines: Iterable[tuple[int, str]], limit: int) -> Iterator[tuple[int, list[str]]]:
    """Group numbered lines into runs of consecutive numbers, at most ``limit`` long: (first number, texts).

    The reader leaves out the lines it reports (too long, NUL bytes), so numbers can skip.
    """
    first, texts = 0, []
    for number, text in lines:
        if texts and (number != first + len(texts) or len(texts) >= limit):
            yield first, texts
            texts = []
        if not texts:
            first = number
        texts.append(text)
    if texts:
        yield first, texts


def _time_of(item: FeedItem) -> float:
    if isinstance(item, (Connection, ZeekObservation)):
        return item.ts
    if item.source_type == "suricata" and item.kind == "flow":
        return flow_start(item.fields.get("flow.start"), item.ts.timestamp())
    return item.ts.timestamp()


def _shifted(event: Event, shift_secs: float) -> datetime:
    return event.ts + timedelta(seconds=shift_secs)
