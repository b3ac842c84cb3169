"""Open and close rounds, and run fusion and publication when a round closes.

A round is ``round_seconds`` of event time, named by its UTC start. It opens with its first
accepted summary and closes once, for the first of three reasons:

- ``quorum``: ``quorum_sites`` enrolled, unrevoked sites have contributed;
- ``deadline``: ``deadline_seconds`` of hub time have passed since its first contribution
  (the server's ticker calls ``close_due_rounds``), so a silent site cannot stall fusion;
- ``forced``: the operator or the demo called ``close_all_open_rounds``.

Closing runs these stages, in one storage transaction so that a crash leaves the round either
open or closed with all its indicators stored:

1. ``mark_closed``: claim the round; a second caller finds it closed and stops;
2. ``collect_evidence``: released observables of the rounds in the lookback window;
3. ``fuse`` and ``select``: the configured strategy with each site's trust weight, then the
   score and corroboration thresholds;
4. ``publish``: indicator versions for the selected observables, revocation of expired ones.

After the commit, the new versions are appended to the SIEM files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fusion_hub.config import FusionSettings, RoundSettings
from fusion_hub.fusion import (
    FusedObservable,
    FusionStrategy,
    SiteEvidence,
    evidence_from_summary,
    should_publish,
)
from fusion_hub.metrics import HubMetrics
from fusion_hub.publisher import PublishReport, Publisher
from fusion_hub.registry import SiteRegistry
from fusion_hub.storage import HubStorage
from fusion_hub.timeutil import from_micros, to_micros, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundOutcome:
    """Counts of one round close."""

    round_start: datetime
    reason: str
    contributors: int
    fused: int
    published: int
    refused: int
    revoked: int


class RoundManager:
    """Decide when rounds close and close each of them exactly once.

    Parameters
    ----------
    storage : HubStorage
        Rounds, contributions and indicator state.
    rounds : RoundSettings
        Quorum, deadline and round length. A larger quorum waits for more corroboration
        but delays indicators; the deadline bounds that delay.
    fusion : FusionSettings
        Lookback, thresholds of publication.
    registry : SiteRegistry
        Source of each site's trust weight.
    strategy : FusionStrategy
        How evidence is fused.
    publisher : Publisher
        Builds, stores and exports indicators.
    metrics : HubMetrics
        Counter of closed rounds.
    clock : callable returning datetime, optional
        Hub time, used for the deadline and the indicators' timestamps.
    """

    def __init__(
        self,
        storage: HubStorage,
        *,
        rounds: RoundSettings,
        fusion: FusionSettings,
        registry: SiteRegistry,
        strategy: FusionStrategy,
        publisher: Publisher,
        metrics: HubMetrics,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.storage = storage
        self.rounds = rounds
        self.fusion = fusion
        self.registry = registry
        self.strategy = strategy
        self.publisher = publisher
        self.metrics = metrics
        self._clock = clock

    def on_contribution(self, round_start: datetime) -> RoundOutcome | None:
        """Close the round if the contribution just stored completed its quorum."""
        round_start_us = to_micros(round_start)
        contributors = self.storage.count_active_contributors(round_start_us)
        if contributors < self.rounds.quorum_sites:
            return None
        return self.close_round(round_start, reason="quorum")

    def close_due_rounds(self, now: datetime | None = None) -> list[RoundOutcome]:
        """Close every open round whose deadline has passed at ``now`` (default: the clock)."""
        now = now or self._clock()
        deadline_us = self.rounds.deadline_seconds * 1_000_000
        due = [r for r in self.storage.open_rounds()
               if r.first_contribution_us + deadline_us <= to_micros(now)]
        outcomes = []
        for record in due:
            outcome = self.close_round(from_micros(record.round_start_us), reason="deadline",
                                       now=now)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def close_all_open_rounds(self) -> list[RoundOutcome]:
        """Close every open round now, oldest first, whatever its quorum and deadline."""
        outcomes = []
        for record in self.storage.open_rounds():
            outcome = self.close_round(from_micros(record.round_start_us), reason="forced")
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def close_round(
        self, round_start: datetime, *, reason: str, now: datetime | None = None
    ) -> RoundOutcome | None:
        """Close one round and publish its indicators.

        Returns
        -------
        RoundOutcome or None
            None when the round was already closed or has no contribution.
        """
        now = now or self._clock()
        round_start_us = to_micros(round_start)
        with self.storage.transaction():
            if not self.mark_closed(round_start_us, now, reason):
                return None
            contributors = self.storage.count_active_contributors(round_start_us)
            evidence = self.collect_evidence(round_start_us)
            fused = self.fuse(evidence)
            report = self.publish(self.select(fused), round_start=round_start, now=now)
            self.storage.record_round_outcome(
                round_start_us, contributors=contributors, published=len(report.published),
                refused=report.refused_total, revoked=len(report.revoked),
            )

        self.publisher.export(report)
        self.metrics.rounds_closed.labels(reason=reason).inc()
        outcome = RoundOutcome(
            round_start=round_start, reason=reason, contributors=contributors,
            fused=len(fused), published=len(report.published), refused=report.refused_total,
            revoked=len(report.revoked),
        )
        log.info("round %s closed (%s): %d sites, %d observables fused, %d indicators "
                 "published, %d refused, %d revoked", _iso(round_start), reason, contributors,
                 outcome.fused, outcome.published, outcome.refused, outcome.revoked)
        return outcome

    def mark_closed(self, round_start_us: int, now: datetime, reason: str) -> bool:
        """Claim the round for closing; False when it is closed already or unknown."""
        return self.storage.mark_round_closed(round_start_us, to_micros(now), reason)

    def collect_evidence(self, round_start_us: int) -> list[SiteEvidence]:
        """Return the observables released in this round and the ones before it.

        The window contains ``lookback_rounds`` rounds ending with this one. Summaries of revoked
        sites are left out.
        """
        span_us = (self.fusion.lookback_rounds - 1) * self.rounds.round_seconds * 1_000_000
        evidence: list[SiteEvidence] = []
        for contribution in self.storage.contributions_between(round_start_us - span_us,
                                                               round_start_us):
            summary = json.loads(contribution.raw)
            evidence.extend(evidence_from_summary(summary,
                                                  round_start_us=contribution.round_start_us))
        return evidence

    def fuse(self, evidence: list[SiteEvidence]) -> list[FusedObservable]:
        """Fuse the evidence with each site's current fusion weight (its trust, unless off)."""
        return self.strategy.fuse(evidence, self.registry.fusion_weights())

    def select(self, fused: list[FusedObservable]) -> list[FusedObservable]:
        """Keep the fused observables that reach the score or corroboration threshold."""
        return [
            item for item in fused
            if should_publish(item, publish_threshold=self.fusion.publish_threshold,
                              min_corroborating_sites=self.fusion.min_corroborating_sites)
        ]

    def publish(
        self, fused: list[FusedObservable], *, round_start: datetime, now: datetime
    ) -> PublishReport:
        """Store indicator versions for the fused observables and revoke expired ones."""
        return self.publisher.publish_round(fused, round_start=round_start, now=now,
                                            strategy=self.strategy.name)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

