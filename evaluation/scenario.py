"""Run one evaluation scenario: every approach on the same sites, rounds and participation.

Approaches (each decides every labelled flow of the evaluated rounds):

``local-only``
    the agent's calibrated IsolationForest at each site, flag at ``score_threshold``;
``fedavg-dp``
    one shared autoencoder trained with DP-FedAvg (``evaluation.fedavg``), no fusion;
``fusion``
    the agent's summariser with privacy switched off in effect (epsilon 100 per round), fused
    by the hub's strategy;
``fusion-dp``
    the same at ``epsilon_per_round`` (the approach the targets are about);
``centralised``
    upper bound: one detector on all sites' pooled baseline windows, calibrated per site, and
    without noise every address that flagged windows at two sites contacted flags its flows at
    every site while an indicator would stay valid.

Rounds before a site's baseline end are training data and are not evaluated. A poisoning site
(``poison_site``) sends crafted summaries in the fusion approaches and inverted updates in
FedAvg. Each round 10 to 30 % of the sites, drawn with the seed, send nothing.

Scenario ``iot23`` has one real capture per site (``evaluation.datasets``). ``iot23-shift`` is
its domain-shift split: each site's local detector is trained and calibrated on the baseline
of another site's capture (``_cross_trained``), so local-only and the fusion approaches detect
on traffic unlike their training data. FedAvg and the centralised bound still train on every
site's own baseline, so they are the in-domain references there. ``cicids2017`` cuts
one dataset into sites by a Dirichlet partition (``evaluation.partition``) and shares one
round clock across them. ``nsl-kdd`` and ``nsl-kdd-shift`` cut NSL-KDD the same way, with a
synthetic host and observable per record (``evaluation.nslkdd``).
"""

from __future__ import annotations

import copy
import logging
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from agent.detector import CalibratedDetector
from agent.errors import DetectorError
from evaluation.datasets import IOT23_SITES, SiteData, SiteSpec, load_site
from evaluation.federation import FusionOutcome, FusionSetup, flow_scores, run_fusion
from evaluation.fedavg import (
    SiteScaler,
    aggregate_dp,
    calibrate,
    clip_update,
    gaussian_epsilon,
    init_weights,
    local_update,
    reconstruction_errors,
)
from evaluation.metrics import detection_latencies, detection_metrics
from evaluation.nslkdd import write_nslkdd_sites
from evaluation.partition import write_cicids_sites

log = logging.getLogger(__name__)

SCENARIOS = ("iot23", "iot23-shift", "cicids2017", "nsl-kdd", "nsl-kdd-shift")
# The poisoning site of each scenario when EvalSettings.poison_site is "auto". In iot23 it has
# few attacks of its own, so the poisoning, not its lost evidence, is what is measured; in
# cicids2017 it is the last partitioned site.
AUTO_POISON_SITES = {"iot23": "iot-20-1", "iot23-shift": "iot-20-1", "cicids2017": "cic-09",
                     "nsl-kdd": "kdd-09", "nsl-kdd-shift": "kdd-09"}


@dataclass(frozen=True)
class EvalSettings:
    """Every knob of a run; the values below are the defaults of ``fti eval``."""

    rounds: int = 20
    window_seconds: int = 60
    # Two of twenty rounds train each site's detector, grown while they hold under 16 windows.
    baseline_rounds: int = 2
    min_baseline_windows: int = 16
    # A window more anomalous than 95 % of its site's baseline raises a local alert.
    score_threshold: float = 0.95
    epsilon_per_round: float = 1.0
    delta_per_round: float = 1e-5
    # One observable per window-unit keeps the partition threshold near 24 windows at
    # epsilon 1; four would raise it to about 90.
    max_observables_per_entity: int = 1
    strategy: str = "noisy-or"
    lookback_rounds: int = 3
    indicator_ttl_rounds: int = 3
    publish_threshold: float = 0.5
    # Above the number of sites that share attackers in the data (two), so that publication
    # comes from the fused score, where trust applies, not from a bare site count.
    min_corroborating_sites: int = 3
    round_seconds: int = 3600
    min_missing_fraction: float = 0.1
    max_missing_fraction: float = 0.3
    # "auto" picks the scenario's entry of AUTO_POISON_SITES; None runs without one.
    poison_site: str | None = "auto"
    poison_observables: int = 50
    # Sites and Dirichlet concentration of the partitioned scenario (cicids2017).
    partition_sites: int = 10
    dirichlet_alpha: float = 0.5
    fedavg_hidden: int = 4
    fedavg_epochs: int = 2
    fedavg_learning_rate: float = 0.05
    fedavg_batch_size: int = 32
    fedavg_clip_norm: float = 1.0
    fedavg_noise_multiplier: float = 1.0
    fedavg_delta: float = 1e-5
    seed: int = 0


class ProgressBar:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, *, width: int = 30) -> None:
        self.total, self.width, self.done = total, width, 0

    def step(self, label: str) -> None:
        self.done += 1
        filled = int(self.width * self.done / self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] "
                         f"{self.done}/{self.total} {label:<32}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_scenario(
    name: str, *, data_dir: Path, settings: EvalSettings, quick: bool = False
) -> dict:
    """Run every approach of a scenario and return the results as a JSON-ready dict.

    Raises
    ------
    ValueError
        If the scenario is unknown.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}")
    started = time.monotonic()
    if settings.poison_site == "auto":
        settings = replace(settings, poison_site=AUTO_POISON_SITES[name])
    extra = _quick_runs(settings) if quick else _extra_runs(settings)
    n_sites = len(IOT23_SITES) if name.startswith("iot23") else settings.partition_sites
    progress = ProgressBar(n_sites + 5 + len(extra))

    with tempfile.TemporaryDirectory(prefix="fti-eval-") as work:
        specs, span, source_dir = _site_specs(name, data_dir, Path(work), settings)
        sites = []
        for spec in specs:
            sites.append(_load(spec, source_dir, Path(work), settings, span))
            progress.step(f"read {spec.site_id}")
    if name == "iot23-shift":
        sites = _cross_trained(sites, settings)
    participation = _participation([s.spec.site_id for s in sites], settings)

    approaches: dict[str, dict] = {}
    decided = _local_only(sites, settings)
    approaches["local-only"] = _summarise(sites, settings, decided, bytes_per_site_round=0.0,
                                          epsilon=0.0, seconds=_detector_seconds(sites, settings))
    progress.step("local-only")
    approaches["fedavg-dp"] = _fedavg(sites, participation, settings)
    progress.step("fedavg-dp")
    for label, epsilon in (("fusion", 100.0), ("fusion-dp", settings.epsilon_per_round)):
        outcome = run_fusion(sites, participation, _setup(settings, epsilon=epsilon), seed=settings.seed)
        approaches[label] = _fusion_result(sites, settings, outcome, private=label == "fusion-dp")
        progress.step(label)
    approaches["centralised"] = _centralised(sites, settings)
    progress.step("centralised")

    variants: dict[str, dict] = {}
    uncalibrated = [replace(site, window_score=site.window_uncalibrated_score) for site in sites]
    for label, setup in extra:
        run_sites = uncalibrated if label == "ablation:without-calibration" else sites
        outcome = run_fusion(run_sites, participation, setup, seed=settings.seed)
        variants[label] = _fusion_result(sites, settings, outcome, private=True)
        progress.step(label)

    return {
        "scenario": name,
        "quick": quick,
        "settings": asdict(settings),
        "sites": [_site_info(site) for site in sites],
        "participation": [sorted(p) for p in participation],
        "approaches": approaches,
        "variants": variants,
        "references": _references(sites, settings),
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }


def _site_specs(
    name: str, data_dir: Path, work: Path, settings: EvalSettings
) -> tuple[list[SiteSpec], tuple[float, float] | None, Path]:
    """Return the scenario's sites, their shared round clock (None: one per site) and folder."""
    if name in ("iot23", "iot23-shift"):
        return list(IOT23_SITES), None, data_dir
    if name == "cicids2017":
        specs, span = write_cicids_sites(data_dir, work, n_sites=settings.partition_sites,
                                         alpha=settings.dirichlet_alpha, seed=settings.seed)
        return specs, span, work
    specs = write_nslkdd_sites(data_dir, work, n_sites=settings.partition_sites,
                               alpha=settings.dirichlet_alpha, seed=settings.seed,
                               shift=name == "nsl-kdd-shift")
    return specs, None, work


def _extra_runs(settings: EvalSettings) -> list[tuple[str, FusionSetup]]:
    """Strategies, ablations, the poisoning effect and the epsilon sweep, all at full depth."""
    base = _setup(settings, epsilon=settings.epsilon_per_round)
    runs = [(f"strategy:{name}", replace(base, strategy=name))
            for name in ("capped-noisy-or", "median", "trimmed-mean", "corroboration", "ensemble")]
    runs.append(("ablation:without-trust", replace(base, use_trust=False)))
    # fusion-dp itself runs without secure aggregation. This variant runs every round through
    # a real hub in secure mode. It waits out a stage timeout per round, so --quick skips it.
    runs.append(("ablation:with-secure-aggregation", replace(base, secure_aggregation=True)))
    # Scores are then the detector's raw scores, min-max scaled per site (see SiteData).
    runs.append(("ablation:without-calibration", base))
    # Publication then needs the fused score alone: on partitioned data every site releases
    # the common observables, and a bare count of releasing sites publishes them all.
    runs.append(("ablation:without-site-count-rule", replace(base, min_corroborating_sites=10**6)))
    runs.append(("ablation:without-poisoning-site", replace(base, poison_site=None)))
    runs.append(("ablation:without-trust-without-poisoning-site",
                 replace(base, use_trust=False, poison_site=None)))
    runs.extend((f"epsilon:{e:g}", replace(base, epsilon_per_round=e)) for e in (0.25, 0.5, 2.0, 4.0))
    return runs


def _quick_runs(settings: EvalSettings) -> list[tuple[str, FusionSetup]]:
    """Return the one variant of --quick: fusion-dp without the poisoning site, for its effect."""
    base = _setup(settings, epsilon=settings.epsilon_per_round)
    return [("ablation:without-poisoning-site", replace(base, poison_site=None))]


def _setup(settings: EvalSettings, *, epsilon: float) -> FusionSetup:
    return FusionSetup(
        epsilon_per_round=epsilon, delta_per_round=settings.delta_per_round,
        max_observables_per_entity=settings.max_observables_per_entity,
        strategy=settings.strategy, use_trust=True, score_threshold=settings.score_threshold,
        lookback_rounds=settings.lookback_rounds, indicator_ttl_rounds=settings.indicator_ttl_rounds,
        publish_threshold=settings.publish_threshold,
        min_corroborating_sites=settings.min_corroborating_sites,
        round_seconds=settings.round_seconds, poison_site=settings.poison_site,
        poison_observables=settings.poison_observables,
    )


def _load(spec: SiteSpec, data_dir: Path, work: Path, settings: EvalSettings,
          span: tuple[float, float] | None) -> SiteData:
    return load_site(spec, data_dir=data_dir, work_dir=work, rounds=settings.rounds,
                     window_seconds=settings.window_seconds, baseline_rounds=settings.baseline_rounds,
                     min_baseline_windows=settings.min_baseline_windows, random_state=settings.seed,
                     span=span)


def _cross_trained(sites: list[SiteData], settings: EvalSettings) -> list[SiteData]:
    """Score each site's windows with a detector trained on the next site's capture.

    The training site is the next one in the scenario's order that has a detector, and the
    last site wraps to the first. The detector is calibrated on that site's baseline too, so
    both the model and the alert threshold come from traffic unlike the site's own.
    """
    trained = [site for site in sites if site.has_detector]
    if len(trained) < 2:
        raise RuntimeError("the domain-shift split needs two sites with a detector; "
                           f"{len(trained)} of {len(sites)} have one")
    shifted = []
    for index, site in enumerate(sites):
        following = [sites[(index + step) % len(sites)] for step in range(1, len(sites))]
        source = next(other for other in following if other.has_detector)
        if not site.windows:
            shifted.append(site)
            continue
        began = time.process_time()
        source_features = np.array([w.features for w in source.windows], dtype=float)
        source_baseline = source_features[source.window_round < source.baseline_rounds]
        detector = CalibratedDetector("iforest", min_baseline_windows=settings.min_baseline_windows,
                                      random_state=settings.seed)
        detector.fit(source_baseline)
        raw = detector.raw_scores(np.array([w.features for w in site.windows], dtype=float))
        reference = detector.raw_scores(source_baseline)
        low, high = float(np.min(reference)), float(np.max(reference))
        uncalibrated = np.clip((raw - low) / (high - low), 0.0, 1.0) if high > low else np.zeros(len(raw))
        shifted.append(replace(site, window_score=detector.calibrate(raw),
                               window_uncalibrated_score=uncalibrated, has_detector=True,
                               detector_seconds=time.process_time() - began))
        log.info("site %s scored by a detector trained on %s", site.spec.site_id, source.spec.site_id)
    return shifted


def _detector_seconds(sites: list[SiteData], settings: EvalSettings) -> float:
    """Return the mean process time of a site's detector (fit and scoring) per round."""
    return float(np.mean([site.detector_seconds for site in sites])) / settings.rounds


def _participation(site_ids: list[str], settings: EvalSettings) -> list[set[str]]:
    rng = np.random.default_rng(settings.seed)
    rounds = []
    for _ in range(settings.rounds):
        fraction = rng.uniform(settings.min_missing_fraction, settings.max_missing_fraction)
        missing = max(1, round(fraction * len(site_ids)))
        absent = set(rng.choice(site_ids, size=missing, replace=False).tolist())
        rounds.append({s for s in site_ids if s not in absent})
    return rounds


def _local_only(sites: list[SiteData], settings: EvalSettings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    decided = {}
    for site in sites:
        scores = flow_scores(site, site.window_score)
        decided[site.spec.site_id] = (scores >= settings.score_threshold, scores)
    return decided


def _fedavg(sites: list[SiteData], participation: list[set[str]], settings: EvalSettings) -> dict:
    rng = np.random.default_rng(settings.seed + 1)
    n_features = len(sites[0].windows[0].features)
    weights = init_weights(n_features, settings.fedavg_hidden, rng)
    prepared = {}
    for site in sites:
        features = np.array([w.features for w in site.windows], dtype=float)
        mask = site.window_round < site.baseline_rounds
        scaler = SiteScaler(features[mask])
        prepared[site.spec.site_id] = (scaler.transform(features), mask)

    window_scores = {s.spec.site_id: np.zeros(len(s.windows)) for s in sites}
    seconds = []
    for round_index, present in enumerate(participation):
        updates = []
        for site in sites:
            site_id = site.spec.site_id
            if site_id not in present:
                continue
            began = time.process_time()
            x, mask = prepared[site_id]
            update = local_update(weights, x[mask], epochs=settings.fedavg_epochs,
                                  learning_rate=settings.fedavg_learning_rate,
                                  batch_size=settings.fedavg_batch_size, rng=rng)
            if site_id == settings.poison_site:
                # Model poisoning: the largest update clipping allows, pointing the wrong way.
                update = -clip_update(update * 1e6, settings.fedavg_clip_norm)
            updates.append(update)
            seconds.append(time.process_time() - began)
        weights = aggregate_dp(weights, updates, clip_norm=settings.fedavg_clip_norm,
                               noise_multiplier=settings.fedavg_noise_multiplier, rng=rng)

        # Every site scores this round's windows with the current global model.
        for site in sites:
            x, mask = prepared[site.spec.site_id]
            in_round = site.window_round == round_index
            if in_round.any():
                baseline_errors = reconstruction_errors(weights, x[mask])
                window_scores[site.spec.site_id][in_round] = calibrate(
                    baseline_errors, reconstruction_errors(weights, x[in_round]))

    decided = {}
    for site in sites:
        scores = flow_scores(site, window_scores[site.spec.site_id])
        decided[site.spec.site_id] = (scores >= settings.score_threshold, scores)
    sampling_rate = float(np.mean([len(p) for p in participation])) / len(sites)
    epsilon = gaussian_epsilon(noise_multiplier=settings.fedavg_noise_multiplier,
                               sampling_rate=sampling_rate, rounds=settings.rounds,
                               delta=settings.fedavg_delta)
    parameters = weights.vector.size
    return _summarise(sites, settings, decided, bytes_per_site_round=8.0 * parameters,
                      epsilon=epsilon, seconds=float(np.mean(seconds)) if seconds else 0.0)


def _centralised(sites: list[SiteData], settings: EvalSettings) -> dict:
    """Pool every site's raw windows in one place: the upper bound, evaluation only.

    One detector is trained on the pooled baseline windows, so each site benefits from the
    other sites' normal traffic. Its raw scores are calibrated against each site's own
    baseline: calibrating against the pooled baseline would compare a quiet lock with a
    Mirai-infected camera, and the largest captures would set every site's threshold. Without
    noise, an address that flagged windows at two or more sites contacted in the lookback
    rounds flags its flows at every site, for as long as a fused indicator stays valid.
    """
    began = time.process_time()
    features = [np.array([w.features for w in s.windows], dtype=float) for s in sites]
    masks = [s.window_round < s.baseline_rounds for s in sites]
    pooled_baseline = np.concatenate([f[m] for f, m in zip(features, masks)])
    detector = CalibratedDetector("iforest", min_baseline_windows=settings.min_baseline_windows,
                                  random_state=settings.seed)
    try:
        detector.fit(pooled_baseline)
    except DetectorError as err:
        raise RuntimeError(f"centralised detector cannot be trained: {err}") from err
    window_scores = []
    for site_features, mask in zip(features, masks):
        raw = detector.raw_scores(site_features)
        # The agent's calibration, with the site's own baseline scores as the reference.
        site_detector = copy.copy(detector)
        site_detector.baseline_scores_ = np.sort(raw[mask])
        window_scores.append(site_detector.calibrate(raw))

    # Rounds in which each address was contacted by a flagged window, per site.
    flagged_at: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for site, scores in zip(sites, window_scores):
        for window, round_index, score in zip(site.windows, site.window_round, scores):
            if score >= settings.score_threshold:
                for remote in window.remotes:
                    flagged_at[remote][int(round_index)].add(site.spec.site_id)

    def corroborated(remote: str | None, round_index: int) -> bool:
        if remote is None or remote not in flagged_at:
            return False
        recent = range(round_index - settings.indicator_ttl_rounds + 1, round_index + 1)
        return len(set().union(*(flagged_at[remote].get(r, set()) for r in recent))) >= 2

    decided = {}
    for site, scores in zip(sites, window_scores):
        local = flow_scores(site, scores)
        matched = np.array([corroborated(remote, int(r))
                            for r, remote in zip(site.flow_round, site.flow_remote)], dtype=bool)
        decided[site.spec.site_id] = ((local >= settings.score_threshold) | matched,
                                      np.where(matched, 1.0, local))
    raw_bytes = float(np.mean([s.raw_bytes for s in sites])) / settings.rounds
    # The centre's process time, shared out per site and round.
    seconds = (time.process_time() - began) / (len(sites) * settings.rounds)
    return _summarise(sites, settings, decided, bytes_per_site_round=raw_bytes,
                      epsilon=float("inf"), seconds=seconds)


def _references(sites: list[SiteData], settings: EvalSettings) -> dict[str, dict]:
    """Two label-derived references, not detectors: what the metrics mean on this data.

    ``flag-every-flow`` shows the F1 that the share of malicious flows alone gives.
    ``window-oracle`` flags every flow of each window that contains a malicious flow: the
    best any rule that decides whole windows can do, and so its false-positive floor.
    """
    every, oracle = {}, {}
    for site in sites:
        every[site.spec.site_id] = (np.ones(site.flow_label.size, dtype=bool), np.ones(site.flow_label.size))
        malicious_windows = np.unique(site.flow_window[site.flow_label & (site.flow_window >= 0)])
        flagged = np.isin(site.flow_window, malicious_windows) & (site.flow_window >= 0)
        oracle[site.spec.site_id] = (flagged, flagged.astype(float))
    references = {}
    for name, decided in (("flag-every-flow", every), ("window-oracle", oracle)):
        summary = _summarise(sites, settings, decided, bytes_per_site_round=0.0, epsilon=0.0, seconds=None)
        # Read from the labels, a reference sends nothing, spends no budget and detects nothing
        # late, so those columns are left empty rather than written as zeros.
        summary.update(latency_rounds=None, median_latency_rounds=None, bytes_per_site_round=None, epsilon=None)
        references[name] = summary
    return references


def _fusion_result(sites: list[SiteData], settings: EvalSettings, outcome: FusionOutcome,
                   *, private: bool) -> dict:
    decided = {s.spec.site_id: (outcome.decisions[s.spec.site_id], outcome.scores[s.spec.site_id])
               for s in sites}
    summaries_sent = max(len(outcome.seconds_per_site_round), 1)
    result = _summarise(
        sites, settings, decided,
        bytes_per_site_round=float(np.sum(outcome.bytes_per_round)) / summaries_sent,
        epsilon=outcome.epsilon_total if private else float("inf"),
        # Each site runs its detector and then summarises, so both count.
        seconds=_detector_seconds(sites, settings) + (float(np.mean(outcome.seconds_per_site_round))
                                                      if outcome.seconds_per_site_round else 0.0),
    )
    result["epsilon_per_round"] = outcome.epsilon_per_round if private else None
    result["published_per_round"] = outcome.published_per_round
    result["final_trust"] = {k: round(v, 4) for k, v in sorted(outcome.final_trust.items())}
    if outcome.aborted_site_rounds is not None:
        result["aborted_site_rounds"] = outcome.aborted_site_rounds
    return result


def _summarise(sites: list[SiteData], settings: EvalSettings,
               decided: dict[str, tuple[np.ndarray, np.ndarray]], *, bytes_per_site_round: float,
               epsilon: float, seconds: float | None) -> dict:
    """Pool the evaluated flows of all sites and compute every metric."""
    labels, decisions, scores, rounds, keys = [], [], [], [], []
    per_site = {}
    for site in sites:
        site_id = site.spec.site_id
        site_decisions, site_scores = decided[site_id]
        evaluated = site.flow_round >= site.baseline_rounds
        labels.append(site.flow_label[evaluated])
        decisions.append(site_decisions[evaluated])
        scores.append(site_scores[evaluated])
        rounds.append(site.flow_round[evaluated])
        keys.extend((site_id, remote or "internal")
                    for remote, keep in zip(site.flow_remote, evaluated) if keep)
        per_site[site_id] = _rounded(detection_metrics(site.flow_label[evaluated],
                                                       site_decisions[evaluated],
                                                       site_scores[evaluated]))
    y, d, s, r = (np.concatenate(a) for a in (labels, decisions, scores, rounds))
    overall = _rounded(detection_metrics(y, d, s))
    per_round = [round(detection_metrics(y[r == i], d[r == i], s[r == i])["f1"], 4)
                 if (r == i).any() else None for i in range(settings.rounds)]
    latencies = detection_latencies(keys, r, y, d)

    # Pooled counts are dominated by the largest capture, so the mean F1 over the sites that
    # have malicious flows to evaluate is reported as well.
    with_attacks = [m["f1"] for m in per_site.values() if m["tp"] + m["fn"] > 0]
    return {
        **overall,
        "macro_f1_sites": round(float(np.mean(with_attacks)), 4) if with_attacks else None,
        "f1_per_round": per_round,
        "latency_rounds": latencies,
        "median_latency_rounds": float(np.median(latencies)) if latencies else None,
        "bytes_per_site_round": round(bytes_per_site_round, 1),
        "compute_seconds_per_site_round": None if seconds is None else round(seconds, 5),
        "epsilon": None if not np.isfinite(epsilon) else round(epsilon, 4),
        "epsilon_per_round": None,
        "per_site": per_site,
    }


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 4) if isinstance(v, float) and np.isfinite(v) else
                (None if isinstance(v, float) else v)) for k, v in metrics.items()}


def _site_info(site: SiteData) -> dict:
    return {"site": site.spec.site_id, "capture": site.spec.capture,
            "description": site.spec.description, "flows": int(site.flow_label.size),
            "malicious": int(site.flow_label.sum()), "windows": len(site.windows),
            "baseline_rounds": site.baseline_rounds, "has_detector": site.has_detector}
