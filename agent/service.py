"""The agent's replay run: logs to windows, windows to scores, scores to DP summaries, then
delivery and the fused-indicator poll.

Replay reads each configured file to its end, so the end of the input closes the last round;
every round that contains at least one window is summarised. Rounds already recorded in the state
are skipped, so running the same replay twice sends nothing twice.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np

from agent.config import AgentConfig, PrivacySection
from agent.consumer import FusedIndicatorConsumer
from agent.detector import CalibratedDetector, ScoredWindow
from agent.errors import AgentError, DeliveryError
from agent.features import FEATURE_SCHEMA_VERSION, Window, build_windows
from agent.metrics import AgentMetrics
from agent.network import Connection, InternalNetworks, OrientationStats, orient_connections
from agent.sender import SummarySender
from agent.state import AgentState, Contact
from agent.secure_round import SecureRoundAborted, SecureRoundRunner
from agent.summariser import BIN_EDGES, RoundRelease, bound_round, summarise_round
from agent.zeek import ParseStats, ZeekRecord, iter_zeek_records
from privacy.errors import BudgetExhausted
from privacy.ledger import PrivacyLedger
from privacy.random import RandomSource, system_random
from privacy.signing import SigningKey, sign_object
from stix_mappings.summary import build_summary

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """Counts and round statuses of one run, for the CLI, the demo and the tests."""

    site_id: str
    connections: int = 0
    windows: int = 0
    rounds: dict[int, str] = field(default_factory=dict)  # round start -> status
    released: dict[int, list[dict]] = field(default_factory=dict)  # round start -> evidence
    epsilon_spent: float = 0.0
    epsilon_budget: float = 0.0
    delivered: int = 0
    rejected: int = 0
    pending: int = 0
    alerts: int = 0
    parse_stats: ParseStats | None = None


class Agent:
    """One site's agent, driven by its configuration.

    Stages of :meth:`run_once`: ``read_connections``, ``score_windows`` (training the detector
    on the baseline rounds first), ``release_rounds`` (DP summaries into the outbox),
    ``deliver`` and, when asked, ``poll_fused_indicators``.
    """

    def __init__(self, config: AgentConfig, *, rng: RandomSource | None = None) -> None:
        self.config = config
        self.rng = rng if rng is not None else system_random()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock: TextIO | None = _lock_state_dir(config.state_dir)
        try:
            self.signing_key = SigningKey.from_file(config.site.signing_key)
            privacy = config.privacy
            self.ledger = PrivacyLedger(
                config.state_dir / "privacy-ledger.sqlite",
                site_id=config.site.id,
                budget_epsilon=privacy.budget_epsilon,
                budget_delta=privacy.budget_delta,
                period_seconds=privacy.period_days * 86400,
            )
            self.state = AgentState(config.state_dir / "agent.sqlite", max_outbox=config.outbox.max_summaries)
        except BaseException:
            self._release_lock()
            raise
        self.metrics = AgentMetrics(config.site.id)

    def close(self) -> None:
        """Close the state database and release the state folder for the next agent."""
        if self._lock is None:
            return
        self.state.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def run_once(self, *, poll: bool = True) -> RunReport:
        """Replay every configured file, send every round and optionally poll for alerts."""
        report = RunReport(site_id=self.config.site.id, epsilon_budget=self.config.privacy.budget_epsilon)
        log.info("site %s: replay started (detector %s, unit %s, epsilon %.3g per round)",
                 self.config.site.id, self.config.detector.name, self.config.privacy.unit,
                 self.config.privacy.epsilon_per_round)
        connections = self.read_connections(report)
        windows = build_windows(connections, window_seconds=self.config.windows.window_seconds)
        report.windows = len(windows)
        scored = self.score_windows(windows)
        self.release_rounds(scored, report)
        self.deliver(report)
        if poll:
            self.poll_fused_indicators(report)
        self.metrics.write(self.config.state_dir / "metrics.prom")
        log.info("site %s: replay finished: %d connections, %d windows, %d rounds, epsilon %.3f of %.3g spent",
                 report.site_id, report.connections, report.windows, len(report.rounds),
                 report.epsilon_spent, report.epsilon_budget)
        return report

    def read_connections(self, report: RunReport) -> list[Connection]:
        """Parse every source and orient its connections, shifted for replay when configured."""
        internal = InternalNetworks(self.config.site.internal_networks)
        parse_stats = ParseStats()
        everything: list[Connection] = []
        for source in self.config.sources:
            paths = _expand(source.paths)
            if not paths:
                raise AgentError(f"source patterns {list(source.paths)} match no file; check sources[].paths")
            connections: list[Connection] = []
            for path in paths:
                other_logs: Counter[str] = Counter()
                orientation = OrientationStats()
                records = _conn_records(iter_zeek_records(path, stats=parse_stats), other_logs)
                found = list(orient_connections(records, internal, stats=orientation))
                self._log_skipped(path, other_logs, orientation, len(found))
                connections.extend(found)
            if source.replay_start is not None and connections:
                shift = source.replay_start.timestamp() - min(c.ts for c in connections)
                connections = [replace(c, ts=c.ts + shift) for c in connections]
            everything.extend(connections)
        everything.sort(key=lambda c: c.ts)
        report.connections = len(everything)
        report.parse_stats = parse_stats
        self.metrics.observe_parse(parse_stats, len(everything))
        return everything

    def _log_skipped(self, path: Path, other_logs: Counter[str], orientation: OrientationStats,
                     connections: int) -> None:
        """Log every record of ``path`` that was read but did not become a connection."""
        site = self.config.site.id
        for log_path, count in sorted(other_logs.items()):
            log.warning("site %s: %s: %d records skipped: their Zeek log path is %r, not conn (taken from "
                        "#path, from _path, or else from the file name); point sources[].paths at conn logs, "
                        "and name a JSON conn log that has no _path field conn*.log or conn*.json",
                        site, path, count, log_path)
        if orientation.missing_fields:
            log.warning("site %s: %s: %d conn records skipped: ts, id.orig_h or id.resp_h is missing or not "
                        "a valid value", site, path, orientation.missing_fields)
        if orientation.both_external and not connections:
            log.warning("site %s: %s: none of its %d connections involves an address in site.internal_networks, "
                        "so nothing was read from it; check that setting", site, path, orientation.both_external)
        elif orientation.both_external:
            log.info("site %s: %s: %d connections between two external hosts skipped (no site entity)",
                     site, path, orientation.both_external)

    def score_windows(self, windows: list[Window]) -> list[ScoredWindow]:
        """Train (or load) the detector on the baseline rounds, then score every window."""
        if not windows:
            return []
        detector = self._detector(self._baseline(windows))
        scores = detector.score(np.array([w.features for w in windows], dtype=float))
        return [ScoredWindow(w.entity, w.start, float(s), w.remotes) for w, s in zip(windows, scores)]

    def _baseline(self, windows: list[Window]) -> list[Window]:
        """Return the windows of the first ``baseline_rounds`` rounds that hold any data.

        When those rounds hold fewer than ``min_baseline_windows`` windows (a capture that
        starts with a lone early connection, a quiet night), the baseline grows by whole rounds
        until it has enough, and the agent logs that it did.
        """
        settings, round_seconds = self.config.detector, self.config.windows.round_seconds
        per_round = Counter(w.start - w.start % round_seconds for w in windows)
        rounds = sorted(per_round)
        taken = baseline_round_count([per_round[r] for r in rounds], baseline_rounds=settings.baseline_rounds,
                                     min_baseline_windows=settings.min_baseline_windows)
        end = rounds[min(taken, len(rounds)) - 1] + round_seconds
        baseline = [w for w in windows if w.start < end]
        if taken > settings.baseline_rounds:
            log.warning("site %s: the first %d rounds hold too few windows for a baseline; training on the "
                        "first %d rounds (%d windows)", self.config.site.id, settings.baseline_rounds,
                        min(taken, len(rounds)), len(baseline))
        return baseline

    def _detector(self, baseline: list[Window]) -> CalibratedDetector:
        settings = self.config.detector
        path = self.config.state_dir / "detector.pickle"
        if path.exists():
            stored = CalibratedDetector.load(path, name=settings.name)
            if stored is not None:
                return stored
        detector = CalibratedDetector(settings.name, min_baseline_windows=settings.min_baseline_windows,
                                      random_state=settings.random_state)
        detector.fit(np.array([w.features for w in baseline], dtype=float).reshape(len(baseline), -1))
        detector.save(path)
        log.info("site %s: detector %s trained on %d baseline windows", self.config.site.id, settings.name,
                 len(baseline))
        return detector

    def release_rounds(self, scored: list[ScoredWindow], report: RunReport) -> None:
        """Summarise each round not yet recorded, charge the ledger and queue the summary."""
        round_seconds = self.config.windows.round_seconds
        by_round: dict[int, list[ScoredWindow]] = defaultdict(list)
        for window in scored:
            by_round[window.start - window.start % round_seconds].append(window)
        for round_start in sorted(by_round):
            status = self.state.round_status(round_start)
            if status is None:
                status = self._release_round(round_start, by_round[round_start], report)
            report.rounds[round_start] = status
        spent = self.ledger.spent(_utc(max(by_round) + round_seconds) if by_round else datetime.now(timezone.utc))
        report.epsilon_spent = spent.epsilon_spent
        self.metrics.observe_budget(spent)

    def _release_round(self, round_start: int, windows: list[ScoredWindow], report: RunReport) -> str:
        config = self.config
        contacts = _contacts(round_start, windows, config.windows.window_seconds)

        # A round charged in the ledger but absent from the state was lost in a crash after the
        # charge: releasing it again would draw fresh noise, a second release of the same data.
        if self.ledger.is_charged(round_start):
            log.warning("site %s: round %d was charged but its summary was lost; not releasing it again",
                        config.site.id, round_start)
            self.state.record_round(round_start, "lost", contacts)
            return "lost"

        privacy = config.privacy
        try:
            self.ledger.check(round_start, privacy.epsilon_per_round, privacy.delta_per_round)
        except BudgetExhausted as err:
            log.warning("site %s: round %d not released: %s", config.site.id, round_start, err)
            self.state.record_round(round_start, "budget_exhausted", contacts)
            self.metrics.rounds_budget_exhausted += 1
            return "budget_exhausted"

        if privacy.mode == "secure":
            return self._release_secure_round(round_start, windows, contacts, report)
        release = summarise_round(windows, round_start=round_start, round_seconds=config.windows.round_seconds,
                                  privacy=privacy, rng=self.rng)
        budget = self.ledger.charge(round_start, release.epsilon, release.delta,
                                    f"discrete-laplace/{privacy.unit}")
        summary = sign_object(self._summary_object(release, budget.epsilon_spent), self.signing_key)
        self.state.queue_summary(round_start, summary, contacts)
        report.released[round_start] = summary["evidence"]
        self.metrics.observe_release(len(release.evidence))
        log.info("site %s: round %s summarised: %d observables released (threshold %d), epsilon %.3g",
                 config.site.id, _utc(round_start).isoformat(), len(release.evidence), release.partition_threshold,
                 release.epsilon)
        return "queued"

    def _summary_object(self, release: RoundRelease, epsilon_spent: float) -> dict:
        name = self.config.detector.name
        return build_round_summary(release, site_id=self.config.site.id, detector_name=name,
                                   detector_version=CalibratedDetector(name).version, privacy=self.config.privacy,
                                   epsilon_spent=epsilon_spent, created=datetime.now(timezone.utc))

    def _release_secure_round(self, round_start: int, windows: list[ScoredWindow], contacts: list[Contact],
                              report: RunReport) -> str:
        """Sum the round with the other sites by secure aggregation; nothing goes to the outbox."""
        privacy = self.config.privacy
        bounded = bound_round(windows, privacy=privacy, rng=self.rng)

        def charge(epsilon: float, delta: float) -> None:
            self.ledger.charge(round_start, epsilon, delta, f"secagg-distributed-gaussian/{privacy.unit}")

        runner = SecureRoundRunner(self.config, self.config.read_hub_password(), rng=self.rng, charge=charge)
        try:
            revealed = runner.run(round_start, bounded)
        except (SecureRoundAborted, DeliveryError) as err:
            log.warning("site %s: round %d not summed: %s", self.config.site.id, round_start, err)
            self.state.record_round(round_start, "aborted", contacts)
            return "aborted"
        self.state.record_round(round_start, "sent", contacts)
        report.released[round_start] = [{"value": value, "noised_entity_count": count}
                                        for value, count in sorted(revealed.items())]
        self.metrics.observe_release(len(revealed))
        return "sent"

    def deliver(self, report: RunReport) -> None:
        password = self.config.read_hub_password()
        sender = SummarySender(self.config.hub, password, self.state, site_id=self.config.site.id)
        try:
            delivery = sender.deliver_pending()
        except DeliveryError as err:
            log.error("site %s: delivery stopped: %s; summaries stay in the outbox", self.config.site.id, err)
            report.pending = len(self.state.pending())
            return
        report.delivered, report.rejected, report.pending = delivery.delivered, delivery.rejected, delivery.pending
        self.metrics.observe_delivery(delivery, len(self.state.pending()))
        for round_start, status in self.state.round_statuses().items():
            if round_start in report.rounds:
                report.rounds[round_start] = status

    def poll_fused_indicators(self, report: RunReport) -> None:
        consumer = FusedIndicatorConsumer(self.config.hub, self.config.read_hub_password(), self.state,
                                          site_id=self.config.site.id, alerts_path=self.config.alerts_path)
        try:
            report.alerts += consumer.poll()
        except DeliveryError as err:
            log.error("site %s: fused-indicator poll failed: %s", self.config.site.id, err)
        self.metrics.alerts_written += report.alerts


def build_round_summary(
    release: RoundRelease, *, site_id: str, detector_name: str, detector_version: str,
    privacy: PrivacySection, epsilon_spent: float, created: datetime,
) -> dict:
    """Build the unsigned network-family summary of one round's release.

    ``epsilon_spent`` is the epsilon the site's ledger has charged in the current period,
    this round included.
    """
    return build_summary(
        site=site_id,
        round_start=_utc(release.round_start),
        round_end=_utc(release.round_end),
        families=[{
            "family": "network",
            "detector": {"name": detector_name, "version": detector_version},
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "score_histogram": {"bin_edges": list(BIN_EDGES), "noised_counts": list(release.histogram)},
            "noised_window_count": release.noised_window_count,
        }],
        evidence=[
            {
                "family": "network",
                "observable_type": e.observable_type,
                "value": e.value,
                "noised_entity_count": e.noised_unit_count,
                "noised_mean_score": e.noised_mean_score,
                "first_seen": _utc(release.round_start),
                "last_seen": _utc(release.round_end),
            }
            for e in release.evidence
        ],
        privacy={
            "unit": privacy.unit,
            "mechanism": "discrete-laplace",
            "epsilon": release.epsilon,
            "delta": release.delta,
            "partition_threshold": release.partition_threshold,
            "max_observables_per_entity": privacy.max_observables_per_entity,
            "max_windows_per_entity": privacy.max_windows_per_entity,
            "epsilon_spent_in_period": round(epsilon_spent, 6),
            "epsilon_budget": privacy.budget_epsilon,
            "period_days": privacy.period_days,
        },
        created=created,
    )


def baseline_round_count(windows_per_round: list[int], *, baseline_rounds: int, min_baseline_windows: int) -> int:
    """Return how many of the first rounds that hold windows the detector's baseline takes.

    ``windows_per_round`` lists the window count of each round that holds any, in time order.
    The baseline is the first ``baseline_rounds`` of them, grown by whole rounds until it holds
    ``min_baseline_windows`` windows or no round is left. The result may exceed the number of
    rounds when ``baseline_rounds`` does.
    """
    taken = baseline_rounds
    while sum(windows_per_round[:taken]) < min_baseline_windows and taken < len(windows_per_round):
        taken += 1
    return taken


def _contacts(round_start: int, windows: list[ScoredWindow], window_seconds: int) -> list[Contact]:
    """Collapse a round's windows into (observable, entity) contacts for the local matcher."""
    merged: dict[tuple[str, str], list] = {}
    for window in windows:
        for remote, connections in window.remotes.items():
            entry = merged.get((remote, window.entity))
            if entry is None:
                merged[(remote, window.entity)] = [connections, window.score, window.start,
                                                   window.start + window_seconds]
            else:
                entry[0] += connections
                entry[1] = max(entry[1], window.score)
                entry[2] = min(entry[2], window.start)
                entry[3] = max(entry[3], window.start + window_seconds)
    return [Contact(round_start, remote, entity, n, score, first, last)
            for (remote, entity), (n, score, first, last) in sorted(merged.items())]


def _lock_state_dir(state_dir: Path) -> TextIO:
    """Take an exclusive lock on ``state_dir``, held until the agent closes.

    Two agents sharing a state folder would each find a round unreleased and each draw fresh
    noise for it, a second release of the same data. The lock is an flock(2) on
    ``agent.lock``, so the kernel drops it when the process dies, even by SIGKILL.

    Raises
    ------
    AgentError
        If another process holds the lock.
    """
    path = state_dir / "agent.lock"
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AgentError(f"another agent (pid {holder}) is running with state folder {state_dir}; wait for it "
                         "to finish, or give each agent its own state_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _conn_records(records: Iterable[ZeekRecord], other_logs: Counter[str]) -> Iterator[ZeekRecord]:
    """Yield the ``conn`` records and count the others by their log path."""
    for record in records:
        if record.log_path == "conn":
            yield record
        else:
            other_logs[record.log_path] += 1


def _expand(patterns: tuple[str, ...]) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        paths.extend(Path(m) for m in matches if Path(m).is_file())
    return paths


def _utc(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
