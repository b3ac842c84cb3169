"""Fusion rounds of the evaluation: the agent's DP summariser and the hub's own round code.

Each round, every participating site summarises its scored windows of the round with
``agent.summariser.summarise_round`` (a seeded generator makes runs repeatable), wraps the
release as the signed STIX summary of the wire contract and posts it to the hub of
``fti hub serve``, run in this process on SQLite (``evaluation.plain``). The hub's intake
checks and stores it, and the hub's ``RoundManager`` closes the round at its deadline: the
configured strategy fuses the evidence of the lookback window with each site's trust weight,
and the ``Publisher`` stores, versions and revokes the indicators. Sites then judge the new
indicators on their own labelled flows and post STIX opinions, which the hub's intake turns
into trust updates (``fusion_hub.feedback``) and, for the ensemble strategy, a refit.

The secure variant (``secure_aggregation``) instead runs every round through a real hub in
secure mode, with the agent's secure rounds at the sites (``evaluation.secure``). The hub then
fuses what the sites reveal in the heavy buckets of the summed sketch, and the evaluation reads
the published indicators back over TAXII.

A flow is flagged when its window's calibrated score reaches the threshold or when its remote
address has an indicator valid when the flow's round closes. With the hub's lifetime of
``indicator_ttl_rounds`` rounds, that is an indicator published when this round or one of the
``indicator_ttl_rounds - 1`` rounds before closed, and not revoked since: the agent's consumer
also matches the contacts of the round that produced an indicator.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

import numpy as np

from agent.config import PrivacySection
from agent.detector import CalibratedDetector, ScoredWindow
from agent.service import build_round_summary
from agent.summariser import EvidenceRelease, RoundRelease, summarise_round
from evaluation.datasets import SiteData
from evaluation.plain import PlainFederation, build_opinion
from evaluation.secure import SecureFederation, poison_windows
from fusion_hub.config import FusionSettings
from privacy.accountant import PrivacyAccountant
from privacy.random import seeded_random
from privacy.signing import generate_signing_key, sign_object

log = logging.getLogger(__name__)

DETECTOR_VERSION = CalibratedDetector("iforest").version

# Evaluation rounds are placed on a fixed calendar so summaries carry valid timestamps.
EPOCH = datetime(2024, 6, 3, tzinfo=timezone.utc)
# The poisoning site's forged entity count per decoy in the plain variant (_poisoned), and
# its invented units per decoy in the secure one.
_POISON_UNITS_PER_DECOY = 100


@dataclass(frozen=True)
class FusionSetup:
    """Parameters of one fusion approach."""

    epsilon_per_round: float
    delta_per_round: float
    max_observables_per_entity: int
    strategy: str
    use_trust: bool
    score_threshold: float
    lookback_rounds: int
    indicator_ttl_rounds: int
    publish_threshold: float
    min_corroborating_sites: int
    round_seconds: int
    poison_site: str | None
    poison_observables: int
    # Run the rounds through a real hub in secure mode (evaluation.secure) instead of
    # signed plain summaries. The sites then split each round's epsilon between the
    # secure releases.
    secure_aggregation: bool = False


@dataclass
class FusionOutcome:
    """Per-site flow decisions and scores, plus what the sites sent and spent."""

    decisions: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    bytes_per_round: list[int] = field(default_factory=list)
    seconds_per_site_round: list[float] = field(default_factory=list)
    epsilon_per_round: float = 0.0
    epsilon_total: float = 0.0
    published_per_round: list[int] = field(default_factory=list)
    final_trust: dict[str, float] = field(default_factory=dict)
    # Secure variant only: site-rounds that ended without the site's contribution summed.
    aborted_site_rounds: int | None = None


def run_fusion(
    sites: list[SiteData], participation: list[set[str]], setup: FusionSetup, *, seed: int
) -> FusionOutcome:
    """Run all rounds of one fusion approach and decide every labelled flow."""
    rounds = len(participation)
    privacy = PrivacySection(unit="entity-window", epsilon_per_round=setup.epsilon_per_round,
                             delta_per_round=setup.delta_per_round, budget_epsilon=1e4,
                             budget_delta=0.5, max_observables_per_entity=setup.max_observables_per_entity,
                             max_windows_per_entity=1)
    windows_by_round = {site.spec.site_id: _scored_windows_by_round(site) for site in sites}
    verdicts = {site.spec.site_id: _verdicts_by_round(site) for site in sites}
    poison_pool = _benign_pool(sites, setup.poison_site)
    if setup.secure_aggregation:
        return _run_secure_fusion(sites, participation, setup, privacy, windows_by_round, verdicts, poison_pool,
                                  seed=seed)
    outcome = FusionOutcome(decisions={}, scores={}, epsilon_per_round=setup.epsilon_per_round)
    fusion = _fusion_settings(setup)
    keys = {site.spec.site_id: generate_signing_key() for site in sites}
    rngs = {site.spec.site_id: seeded_random(seed * 1000 + i) for i, site in enumerate(sites)}
    poison_rng = np.random.default_rng(seed + 7)
    known: list[dict[str, float]] = []
    rounds_sent: dict[str, int] = defaultdict(int)

    with PlainFederation(keys, fusion=fusion, round_seconds=setup.round_seconds, seed=seed) as federation:
        for site_id, key in sorted(keys.items()):
            federation.enroll(site_id, key.public_key_b64)
        for round_index in range(rounds):
            round_start = EPOCH + timedelta(seconds=round_index * setup.round_seconds)
            round_end = round_start + timedelta(seconds=setup.round_seconds)
            # The sites post when their round ends, with that time as the summary's creation
            # time, so that runs repeat byte for byte.
            federation.now = round_end
            sent_bytes = 0
            for site in sites:
                site_id = site.spec.site_id
                if site_id not in participation[round_index]:
                    continue
                began = time.process_time()
                release = summarise_round(windows_by_round[site_id].get(round_index, []),
                                          round_start=int(round_start.timestamp()),
                                          round_seconds=setup.round_seconds, privacy=privacy,
                                          rng=rngs[site_id])
                if site_id == setup.poison_site:
                    release = _poisoned(release, poison_pool, setup.poison_observables, poison_rng)
                summary = sign_object(build_round_summary(
                    release, site_id=site_id, detector_name="iforest",
                    detector_version=DETECTOR_VERSION, privacy=privacy,
                    epsilon_spent=release.epsilon, created=round_end), keys[site_id])
                outcome.seconds_per_site_round.append(time.process_time() - began)
                sent_bytes += federation.post(site_id, "summaries", [summary])
                rounds_sent[site_id] += 1

            closed = federation.close_round(round_start)
            outcome.published_per_round.append(len(closed.published))
            known.append(closed.valid)

            # Participating sites judge the new indicators on their own labelled flows.
            for site_id in sorted(participation[round_index]):
                site_verdicts = verdicts[site_id].get(round_index, {})
                opinions = [build_opinion(site_id, item.id, agree=site_verdicts[item.value],
                                          created=federation.now)
                            for item in closed.published if item.value in site_verdicts]
                sent_bytes += federation.post(site_id, "feedback", opinions)
            outcome.bytes_per_round.append(sent_bytes)
        outcome.final_trust = federation.trust_weights()

    _decide_flows(sites, known, rounds_sent, setup, outcome)
    return outcome


def _fusion_settings(setup: FusionSetup) -> FusionSettings:
    """Return the hub's fusion settings for a run, the same in plain and secure mode."""
    return FusionSettings(strategy=setup.strategy, lookback_rounds=setup.lookback_rounds,
                          publish_threshold=setup.publish_threshold,
                          min_corroborating_sites=setup.min_corroborating_sites,
                          indicator_ttl_seconds=setup.indicator_ttl_rounds * setup.round_seconds,
                          trust_weighting=setup.use_trust)


def _run_secure_fusion(
    sites: list[SiteData], participation: list[set[str]], setup: FusionSetup, privacy: PrivacySection,
    windows_by_round: dict[str, dict[int, list[ScoredWindow]]], verdicts: dict[str, dict[int, dict[str, bool]]],
    poison_pool: list[str], *, seed: int,
) -> FusionOutcome:
    """Run every round through a real secure-mode hub and the agent's secure rounds."""
    outcome = FusionOutcome(decisions={}, scores={}, epsilon_per_round=setup.epsilon_per_round,
                            aborted_site_rounds=0)
    rngs = {site.spec.site_id: seeded_random(seed * 1000 + i) for i, site in enumerate(sites)}
    poison_rng = np.random.default_rng(seed + 7)
    fusion = _fusion_settings(setup)
    rounds_sent: dict[str, int] = defaultdict(int)

    def charge(site_id: str, epsilon: float, delta: float) -> None:
        rounds_sent[site_id] += 1

    active: dict[str, tuple[int, float]] = {}
    known: list[dict[str, float]] = []
    # The sites' noise must hold with the fewest sites a round can have.
    with SecureFederation([s.spec.site_id for s in sites], privacy=privacy, fusion=fusion,
                          round_seconds=setup.round_seconds,
                          min_sites=min(len(p) for p in participation)) as federation:
        for round_index, present in enumerate(participation):
            round_start = int((EPOCH + timedelta(seconds=round_index * setup.round_seconds)).timestamp())
            round_end = EPOCH + timedelta(seconds=(round_index + 1) * setup.round_seconds)
            windows = {site_id: windows_by_round[site_id].get(round_index, []) for site_id in sorted(present)}
            if setup.poison_site in windows:
                # As many invented units per decoy as the plain variant's forged entity count.
                windows[setup.poison_site] = poison_windows(
                    poison_pool, count=setup.poison_observables, windows_per_decoy=_POISON_UNITS_PER_DECOY,
                    round_start=round_start, rng=poison_rng)
            report = federation.run_round(round_start, windows, rngs=rngs, charge=charge)
            outcome.aborted_site_rounds = (outcome.aborted_site_rounds or 0) + len(report.aborted_sites)
            outcome.bytes_per_round.append(sum(report.bytes_by_site.values()))
            outcome.seconds_per_site_round.extend(report.seconds_by_site.values())
            outcome.published_per_round.append(len(report.published))
            known.append(_valid_indicators(active, report.published, round_index, setup.indicator_ttl_rounds))
            # Participating sites judge the new indicators, as in the plain variant.
            for site_id in sorted(present):
                site_verdicts = verdicts[site_id].get(round_index, {})
                opinions = [build_opinion(site_id, indicator_id, agree=site_verdicts[value],
                                          created=round_end)
                            for value, indicator_id in sorted(report.indicator_ids.items())
                            if value in site_verdicts]
                outcome.bytes_per_round[-1] += federation.post_opinions(site_id, opinions)
            log.info("secure round %d: %d sites, %d aborted, %d indicators", round_index, len(present),
                     len(report.aborted_sites), len(report.published))
        outcome.final_trust = federation.trust_weights()

    _decide_flows(sites, known, rounds_sent, setup, outcome)
    return outcome


def _valid_indicators(active: dict[str, tuple[int, float]], published: dict[str, float], round_index: int,
                      ttl_rounds: int) -> dict[str, float]:
    """Record the round's indicators in ``active``; return those valid in the round."""
    for value, score in published.items():
        active[value] = (round_index, score)
    return {value: score for value, (published_round, score) in active.items()
            if published_round > round_index - ttl_rounds}


def _decide_flows(sites: list[SiteData], known: list[dict[str, float]], rounds_sent: dict[str, int],
                  setup: FusionSetup, outcome: FusionOutcome) -> None:
    """Fill in the privacy spent and every flow's decision and score."""
    # Composition over the rounds the busiest site sent, at the delta of the agents' budget.
    accountant = PrivacyAccountant()
    accountant.compose(setup.epsilon_per_round, setup.delta_per_round,
                       count=max(rounds_sent.values(), default=0))
    outcome.epsilon_total = accountant.get_epsilon(1e-3) if rounds_sent else 0.0

    for site in sites:
        local = flow_scores(site, site.window_score)
        fused = np.array([known[r].get(remote, 0.0) if remote is not None else 0.0
                          for r, remote in zip(site.flow_round, site.flow_remote)])
        matched = np.array([remote is not None and remote in known[r]
                            for r, remote in zip(site.flow_round, site.flow_remote)], dtype=bool)
        outcome.decisions[site.spec.site_id] = (local >= setup.score_threshold) | matched
        outcome.scores[site.spec.site_id] = np.maximum(local, fused)


def flow_scores(site: SiteData, window_scores: np.ndarray) -> np.ndarray:
    """Give each flow its window's score; a flow without a site entity scores 0."""
    scores = np.zeros(len(site.flow_label))
    oriented = site.flow_window >= 0
    scores[oriented] = window_scores[site.flow_window[oriented]]
    return scores


def _scored_windows_by_round(site: SiteData) -> dict[int, list[ScoredWindow]]:
    by_round: dict[int, list[ScoredWindow]] = defaultdict(list)
    for window, round_index, score in zip(site.windows, site.window_round, site.window_score):
        by_round[int(round_index)].append(ScoredWindow(window.entity, window.start, float(score),
                                                       window.remotes))
    return by_round


def _verdicts_by_round(site: SiteData) -> dict[int, dict[str, bool]]:
    """Return, per round, each remote's majority label over the site's flows to it."""
    counts: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for round_index, remote, label in zip(site.flow_round, site.flow_remote, site.flow_label):
        if remote is not None:
            counts[int(round_index)][remote][int(label)] += 1
    return {r: {remote: c[1] > c[0] for remote, c in per_remote.items()}
            for r, per_remote in counts.items()}


def _benign_pool(sites: list[SiteData], poison_site: str | None) -> list[str]:
    """Remote addresses that other sites contact only in benign flows: the poisoner's decoys."""
    labels: dict[str, set[bool]] = defaultdict(set)
    for site in sites:
        if site.spec.site_id == poison_site:
            continue
        for remote, label in zip(site.flow_remote, site.flow_label):
            if remote is not None:
                labels[remote].add(bool(label))
    return sorted(remote for remote, seen in labels.items() if seen == {False})


def _poisoned(
    release: RoundRelease, pool: list[str], count: int, rng: np.random.Generator
) -> RoundRelease:
    """A poisoning site's release: benign decoys at full score, its true findings hidden."""
    if not pool:
        return replace(release, evidence=())
    chosen = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    decoys = tuple(EvidenceRelease("ipv4-addr" if ":" not in pool[i] else "ipv6-addr", pool[i],
                                   _POISON_UNITS_PER_DECOY, 1.0) for i in sorted(chosen))
    return replace(release, evidence=decoys)
