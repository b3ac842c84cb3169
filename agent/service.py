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
from agent.errors import AgentError, ConfigError, DeliveryError
from agent.events import Event, EventStats
from agent.families import configured_families, families_of_source
from agent.families.feeding import FamilyFeeder, FeedItem
from agent.families.release import FamiliesRelease, evidence_items, family_sections, summarise_families
from agent.families.scoring import FAMILY_SPECS, FamilyScorer, baseline_round_count
from agent.features import FEATURE_SCHEMA_VERSION, Window
from agent.metrics import AgentMetrics
from agent.network import OrientationStats
from agent.observables import split_observable_key
from agent.sources import iter_file_events
from agent.sender import SummarySender
from agent.state import AgentState, Contact
from agent.secure_round import SecureRoundAborted, SecureRoundRunner
from agent.summariser import BIN_EDGES, RoundRelease, bound_round, summarise_round
from agent.zeek import ParseStats, iter_zeek_records
from agent.zeek_observables import OBSERVED_LOGS
from privacy.errors import BudgetExhausted, KeyFileInvalid
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
    event_stats: EventStats | None = None  # sshd, Suricata and Sysmon sources


class Agent:
    """One site's agent, driven by its configuration.

    Stages of :meth:`run_once`: ``read_connections``, ``score_windows`` (training the detector
    on the baseline rounds first), ``release_rounds`` (DP summaries into the outbox),
    ``deliver`` and, when asked, ``poll_fused_indicators``.
    """

    def __init__(self, config: AgentConfig, *, rng: RandomSource | None = None) -> None:
        self.config = config
        self.rng = rng if rng is not None else system_random()
        # What the agent reads later is checked now, so that a run fails before it reads a log
        # or spends privacy budget.
        config.read_hub_password()
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(str(config.state_dir), 0, "state_dir", str(config.state_dir),
                              f"cannot create the state folder ({err.strerror or err}); choose a folder the agent "
                              "may write, such as /var/lib/fti-agent") from err
        self._lock: TextIO | None = _lock_state_dir(config.state_dir)
        try:
            try:
                self.signing_key = SigningKey.from_file(config.site.signing_key)
            except KeyFileInvalid as err:
                raise ConfigError(str(config.site.signing_key), 0, "site.signing_key", str(config.site.signing_key),
                                  f"{err}; create a key with `fti keys generate --out FILE` or fix the path") from err
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
        self.scorer = FamilyScorer(config.detector, state_dir=config.state_dir,
                                   round_seconds=config.windows.round_seconds, site_id=config.site.id)

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
        feeder = self.read_sources(report)
        windows = feeder.close()
        report.windows = sum(len(family_windows) for family_windows in windows.values())
        scored = {family: self.scorer.score(family, family_windows) for family, family_windows in windows.items()}
        self.release_rounds(scored, report)
        self.deliver(report)
        if poll:
            self.poll_fused_indicators(report)
        self.metrics.write(self.config.state_dir / "metrics.prom")
        log.info("site %s: replay finished: %d connections, %d windows, %d rounds, epsilon %.3f of %.3g spent",
                 report.site_id, report.connections, report.windows, len(report.rounds),
                 report.epsilon_spent, report.epsilon_budget)
        return report

    def read_sources(self, report: RunReport) -> FamilyFeeder:
        """Parse every source into the windows of its families, shifted for replay when configured."""
        config = self.config
        feeder = self.new_feeder()
        parse_stats, event_stats = ParseStats(), EventStats()
        for source in config.sources:
            paths = _expand(source.paths)
            if not paths:
                raise AgentError(f"source patterns {list(source.paths)} match no file; check sources[].paths")
            items: list[FeedItem] = []
            # Unshifted TSV conn lines go straight to the windows. A shift waits for the earliest time.
            families = families_of_source(source) if source.replay_start is None else ()
            for path in paths:
                if source.type == "zeek":
                    items.extend(self._read_zeek(path, feeder, parse_stats, families))
                else:
                    items.extend(iter_file_events(path, source.type, stats=event_stats))
            shift = 0.0
            if source.replay_start is not None and items:
                shift = source.replay_start.timestamp() - min(_event_time(item) for item in items)
            feeder.feed(items, families=families_of_source(source), shift_secs=shift)
        report.connections = feeder.orientation.connections
        report.parse_stats, report.event_stats = parse_stats, event_stats
        if feeder.unused:
            log.info("site %s: records read but feeding no configured family: %s", config.site.id,
                     ", ".join(f"{kind} {count}" for kind, count in sorted(feeder.unused.items())))
        self.metrics.observe_parse(parse_stats, report.connections)
        return feeder

    def new_feeder(self) -> FamilyFeeder:
        """Return empty windows for every configured family."""
        config = self.config
        return FamilyFeeder(configured_families(config.sources), window_seconds=config.windows.window_seconds,
                            internal_networks=config.site.internal_networks,
                            internal_domains=config.site.internal_domains)

    def _read_zeek(self, path: Path, feeder: FamilyFeeder, parse_stats: ParseStats,
                   direct_families: tuple[str, ...]) -> list[FeedItem]:
        """Return the items of one Zeek log, its conn lines already in the windows of ``direct_families``."""
        orientation = OrientationStats()
        records = list(iter_zeek_records(path, stats=parse_stats,
                                         tsv_reader=feeder.tsv_reader(direct_families, orientation),
                                         json_reader=feeder.json_reader(direct_families, orientation)))
        items = feeder.parse_zeek(records, orientation=orientation)
        other_logs = Counter(r.log_path for r in records if r.log_path != "conn" and r.log_path not in OBSERVED_LOGS)
        self._log_skipped(path, other_logs, orientation, orientation.connections)
        self.metrics.conn_records_skipped += orientation.missing_fields
        return items

    def _log_skipped(self, path: Path, other_logs: Counter[str], orientation: OrientationStats,
                     connections: int) -> None:
        """Log every record of ``path`` that was read but did not become a connection."""
        site = self.config.site.id
        for log_path, count in sorted(other_logs.items()):
            log.warning("site %s: %s: %d records skipped: their Zeek log path is %r, not conn or another log "
                        "the agent reads (%s; taken from #path, from _path, or else from the file name); point "
                        "sources[].paths at those logs, and name a JSON log that has no _path field after its "
                        "log, such as conn*.log or conn*.json", site, path, count, log_path,
                        ", ".join(sorted(OBSERVED_LOGS)))
        if orientation.missing_fields:
            log.warning("site %s: %s: %d conn records skipped: ts, id.orig_h or id.resp_h is missing or not "
                        "a valid value", site, path, orientation.missing_fields)
        if orientation.both_external and not connections:
            log.warning("site %s: %s: none of its %d connections involves an address in site.internal_networks, "
                        "so nothing was read from it; check that setting", site, path, orientation.both_external)
        elif orientation.both_external:
            log.info("site %s: %s: %d connections between two external hosts skipped (no site entity)",
                     site, path, orientation.both_external)

    def score_windows(self, windows: list[Window], family: str = "network") -> list[ScoredWindow]:
        """Train (or load) the family's detector on its baseline rounds, then score every window."""
        return self.scorer.score(family, windows)

    def release_rounds(self, scored: dict[str, list[ScoredWindow]], report: RunReport) -> None:
        """Summarise each round not yet recorded, charge the ledger and queue the summary.

        ``scored`` contains each family's scored windows. A round's summary covers every family.
        """
        round_seconds = self.config.windows.round_seconds
        by_round: dict[int, dict[str, list[ScoredWindow]]] = defaultdict(lambda: defaultdict(list))
        for family, windows in scored.items():
            for window in windows:
                by_round[window.start - window.start % round_seconds][family].append(window)
        for round_start in sorted(by_round):
            status = self.state.round_status(round_start)
            if status is None:
                status = self._release_round(round_start, by_round[round_start], report)
            report.rounds[round_start] = status
        spent = self.ledger.spent(_utc(max(by_round) + round_seconds) if by_round else datetime.now(timezone.utc))
        report.epsilon_spent = spent.epsilon_spent
        self.metrics.observe_budget(spent)

    def _release_round(self, round_start: int, scored: dict[str, list[ScoredWindow]], report: RunReport) -> str:
        config = self.config
        windows = [window for family_windows in scored.values() for window in family_windows]
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

        families = configured_families(config.sources)
        if privacy.mode == "secure":
            return self._release_secure_round(round_start, {f: scored.get(f, []) for f in families}, contacts,
                                              report)
        release = summarise_families(scored, families, round_start=round_start,
                                     round_seconds=config.windows.round_seconds, privacy=privacy, rng=self.rng)
        budget = self.ledger.charge(round_start, release.epsilon, release.delta,
                                    f"discrete-laplace/{privacy.unit}")
        summary = sign_object(self._summary_object(release, budget.epsilon_spent), self.signing_key)
        self.state.queue_summary(round_start, summary, contacts)
        report.released[round_start] = summary["evidence"]
        self.metrics.observe_release(release.evidence_count)
        log.info("site %s: round %s summarised (%s): %d observables released (threshold %d), epsilon %.3g",
                 config.site.id, _utc(round_start).isoformat(), ", ".join(families), release.evidence_count,
                 release.partition_threshold, release.epsilon)
        return "queued"

    def _summary_object(self, release: FamiliesRelease, epsilon_spent: float) -> dict:
        config, privacy = self.config, self.config.privacy
        detectors = {family: (config.detector.name, self.scorer.new_detector(family).version)
                     for family in release.families}
        versions = {family: FAMILY_SPECS[family].feature_schema_version for family in release.families}
        return build_summary(
            site=config.site.id,
            round_start=_utc(release.round_start),
            round_end=_utc(release.round_end),
            families=family_sections(release, detectors, versions),
            evidence=evidence_items(release),
            privacy=summary_privacy(privacy, epsilon=release.epsilon, delta=release.delta,
                                    partition_threshold=release.partition_threshold, epsilon_spent=epsilon_spent),
            created=datetime.now(timezone.utc),
        )

    def _release_secure_round(self, round_start: int, scored: dict[str, list[ScoredWindow]],
                              contacts: list[Contact], report: RunReport) -> str:
        """Sum every configured family's round with the other sites by secure aggregation.

        Nothing goes to the outbox.
        """
        privacy = self.config.privacy
        bounded = {family: bound_round(windows, privacy=privacy, rng=self.rng) for family, windows in scored.items()}

        def charge(epsilon: float, delta: float) -> None:
            self.ledger.charge(round_start, epsilon, delta, f"secagg-distributed-gaussian/{privacy.unit}")

        runner = SecureRoundRunner(self.config, self.config.read_hub_password(), rng=self.rng, charge=charge)
        try:
            revealed = runner.run(round_start, bounded)
        except BudgetExhausted as err:
            # The charge comes before the masked input, so a rejected charge leaves the round
            # with nothing sent that depends on the data. The hub treats the site as dropped.
            log.warning("site %s: round %d left before its masked input: %s", self.config.site.id,
                        round_start, err)
            self.state.record_round(round_start, "budget_exhausted", contacts)
            self.metrics.rounds_budget_exhausted += 1
            return "budget_exhausted"
        except (SecureRoundAborted, DeliveryError) as err:
            log.warning("site %s: round %d not summed: %s", self.config.site.id, round_start, err)
            self.state.record_round(round_start, "aborted", contacts)
            return "aborted"
        self.state.record_round(round_start, "sent", contacts)
        report.released[round_start] = [
            {"family": family, "observable_type": kind, "value": value, "noised_entity_count": count}
            for family, values in revealed.items()
            for (kind, value), count in sorted((split_observable_key(key), n) for key, n in values.items())]
        self.metrics.observe_release(len(report.released[round_start]))
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
        privacy=summary_privacy(privacy, epsilon=release.epsilon, delta=release.delta,
                                partition_threshold=release.partition_threshold, epsilon_spent=epsilon_spent),
        created=created,
    )


def summary_privacy(privacy: PrivacySection, *, epsilon: float, delta: float, partition_threshold: int,
                    epsilon_spent: float) -> dict:
    """Return a summary's ``privacy`` object for a round that spent (``epsilon``, ``delta``)."""
    return {
        "unit": privacy.unit,
        "mechanism": "discrete-laplace",
        "epsilon": epsilon,
        "delta": delta,
        "partition_threshold": partition_threshold,
        "max_observables_per_entity": privacy.max_observables_per_entity,
        "max_windows_per_entity": privacy.max_windows_per_entity,
        "epsilon_spent_in_period": round(epsilon_spent, 6),
        "epsilon_budget": privacy.budget_epsilon,
        "period_days": privacy.period_days,
    }


def _contacts(round_start: int, windows: list[ScoredWindow], window_seconds: int) -> list[Contact]:
    """Collapse a round's windows into (observable, entity) contacts for the local matcher."""
    merged: dict[tuple[str, str], list] = {}
    for window in windows:
        for key, connections in window.remotes.items():
            remote = split_observable_key(key)[1]
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


def _expand(patterns: tuple[str, ...]) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        paths.extend(Path(m) for m in matches if Path(m).is_file())
    return paths


def _event_time(item: FeedItem) -> float:
    return item.ts.timestamp() if isinstance(item, Event) else item.ts


def _utc(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
