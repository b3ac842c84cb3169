"""`fti eval --quick` end to end on the real labelled IoT-23 and Stratosphere captures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.detector import CalibratedDetector
from evaluation.datasets import IOT23_SITES, load_site
from evaluation.federation import FusionSetup, _fusion_settings, run_fusion
from evaluation.scenario import EvalSettings, _cross_trained
from fti.cli import main

# The quick run takes about 30 s of CPU time, and 40 to 130 s of wall time on two shared cores.
pytestmark = pytest.mark.slow

APPROACHES = ["local-only", "fedavg-dp", "fusion", "fusion-dp", "centralised"]
FIGURES = ["f1_per_approach.png", "f1_per_round.png", "latency_boxplot.png",
           "confusion_matrix.png", "epsilon_vs_f1.png", "ablations_poisoning.png"]


@pytest.fixture(scope="module")
def quick_results(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    assert main(["eval", "--scenario", "iot23", "--quick", "--out", str(out),
                 "--data-dir", str(shared_data_dir)]) == 0
    return out


def test_eval_quick_writes_tables_and_figures(quick_results: Path) -> None:
    results = json.loads((quick_results / "results.json").read_text(encoding="utf-8"))
    table = (quick_results / "results.md").read_text(encoding="utf-8")

    assert sorted(results["approaches"]) == sorted(APPROACHES)
    assert sorted(results["variants"]) == ["ablation:without-poisoning-site"]
    assert "| ablation:without-dp |" in table
    for name in FIGURES:
        assert (quick_results / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in APPROACHES:
        assert f"| {name} |" in table


def test_eval_quick_counts_every_evaluated_flow(quick_results: Path) -> None:
    """All approaches judge the same flows, and the labels match the published counts."""
    results = json.loads((quick_results / "results.json").read_text(encoding="utf-8"))
    sites = {s["site"]: s for s in results["sites"]}

    totals = {name: sum(a[k] for k in ("tp", "fp", "fn", "tn"))
              for name, a in results["approaches"].items()}
    positives = {name: a["tp"] + a["fn"] for name, a in results["approaches"].items()}

    assert len(set(totals.values())) == 1
    assert len(set(positives.values())) == 1
    assert (sites["iot-34-1"]["flows"], sites["iot-34-1"]["malicious"]) == (23145, 21222)
    assert (sites["ctu-008"]["flows"], sites["ctu-008"]["malicious"]) == (5603, 4201)
    assert sites["iot-4-1"]["malicious"] == 0


def test_eval_quick_reports_privacy_and_cost(quick_results: Path) -> None:
    approaches = json.loads((quick_results / "results.json").read_text(
        encoding="utf-8"))["approaches"]

    assert approaches["fusion-dp"]["epsilon_per_round"] == 1.0
    assert 1.0 < approaches["fusion-dp"]["epsilon"] <= 20.0
    assert approaches["fusion"]["epsilon"] is None
    assert approaches["fedavg-dp"]["epsilon"] > 0
    assert approaches["fusion-dp"]["bytes_per_site_round"] > 500
    assert approaches["local-only"]["bytes_per_site_round"] == 0
    for name in APPROACHES:
        assert approaches[name]["compute_seconds_per_site_round"] > 0
    # A fusion site runs its detector as local-only does, then summarises.
    assert (approaches["fusion-dp"]["compute_seconds_per_site_round"]
            > approaches["local-only"]["compute_seconds_per_site_round"])
    assert all(0.0 <= a["f1"] <= 1.0 for a in approaches.values())


def test_eval_quick_references_leave_cost_columns_empty(quick_results: Path) -> None:
    """The label references send nothing and spend nothing, so those cells read "–", not 0."""
    results = json.loads((quick_results / "results.json").read_text(encoding="utf-8"))
    table = (quick_results / "results.md").read_text(encoding="utf-8")

    every = results["references"]["flag-every-flow"]
    assert every["recall"] == 1.0
    assert every["fpr"] == 1.0
    for reference in results["references"].values():
        for key in ("median_latency_rounds", "bytes_per_site_round", "compute_seconds_per_site_round", "epsilon"):
            assert reference[key] is None
    row = next(line for line in table.splitlines() if line.startswith("| flag-every-flow |"))
    assert row.endswith("| 1 | – | – | – | – |")


def test_eval_quick_pooled_bound_beats_local(quick_results: Path) -> None:
    """Pooling every site's windows in one place does at least as well as each site alone."""
    approaches = json.loads((quick_results / "results.json").read_text(
        encoding="utf-8"))["approaches"]

    assert approaches["centralised"]["f1"] >= approaches["local-only"]["f1"]
    assert approaches["centralised"]["fpr"] <= approaches["local-only"]["fpr"]


def test_run_fusion_same_seed_same_decisions(shared_data_dir: Path, tmp_path: Path) -> None:
    """Two runs with one seed agree flow by flow, and the poisoning site loses trust."""
    specs = [s for s in IOT23_SITES if s.site_id in ("iot-44-1", "iot-4-1", "ctu-010")]
    sites = [load_site(spec, data_dir=shared_data_dir, work_dir=tmp_path, rounds=6,
                       window_seconds=60, baseline_rounds=1, min_baseline_windows=16,
                       random_state=0) for spec in specs]
    participation = [{s.spec.site_id for s in sites}] * 6
    setup = FusionSetup(epsilon_per_round=1.0, delta_per_round=1e-5, max_observables_per_entity=1,
                        strategy="noisy-or", use_trust=True, score_threshold=0.95,
                        lookback_rounds=3, indicator_ttl_rounds=3, publish_threshold=0.5,
                        min_corroborating_sites=3, round_seconds=3600, poison_site="iot-44-1",
                        poison_observables=20)

    first = run_fusion(sites, participation, setup, seed=3)
    second = run_fusion(sites, participation, setup, seed=3)

    for site in sites:
        site_id = site.spec.site_id
        assert first.decisions[site_id].tolist() == second.decisions[site_id].tolist()
        assert first.scores[site_id].tolist() == second.scores[site_id].tolist()
    assert first.final_trust["iot-44-1"] < 0.5
    assert first.final_trust["iot-4-1"] == pytest.approx(2 / 3)


def test_shift_scores_with_next_site_detector(shared_data_dir: Path, tmp_path: Path) -> None:
    """In iot23-shift a site's windows are scored by the next site's detector and baseline."""
    specs = [s for s in IOT23_SITES if s.site_id in ("iot-44-1", "iot-4-1", "ctu-010")]
    settings = EvalSettings(rounds=6, baseline_rounds=1)
    sites = [load_site(spec, data_dir=shared_data_dir, work_dir=tmp_path, rounds=6,
                       window_seconds=60, baseline_rounds=1, min_baseline_windows=16,
                       random_state=0) for spec in specs]

    shifted = _cross_trained(sites, settings)

    source = sites[1]
    features = np.array([w.features for w in source.windows], dtype=float)
    detector = CalibratedDetector("iforest", min_baseline_windows=16, random_state=0)
    detector.fit(features[source.window_round < source.baseline_rounds])
    expected = detector.calibrate(detector.raw_scores(
        np.array([w.features for w in sites[0].windows], dtype=float)))
    assert [s.spec.site_id for s in shifted] == [s.spec.site_id for s in sites]
    assert shifted[0].window_score.tolist() == expected.tolist()
    assert shifted[0].window_score.tolist() != sites[0].window_score.tolist()
    assert shifted[0].flow_label.tolist() == sites[0].flow_label.tolist()
    assert shifted[0].detector_seconds > 0


@pytest.mark.parametrize("use_trust", [True, False])
def test_plain_and_secure_hubs_share_fusion_settings(use_trust: bool) -> None:
    """The secure variant's hub gets the trust switch and indicator lifetime of the plain one."""
    setup = FusionSetup(epsilon_per_round=1.0, delta_per_round=1e-5, max_observables_per_entity=1,
                        strategy="median", use_trust=use_trust, score_threshold=0.95,
                        lookback_rounds=2, indicator_ttl_rounds=4, publish_threshold=0.6,
                        min_corroborating_sites=2, round_seconds=600, poison_site=None,
                        poison_observables=0)

    fusion = _fusion_settings(setup)

    assert fusion.trust_weighting is use_trust
    assert fusion.indicator_ttl_seconds == 2400
    assert fusion.strategy == "median"
    assert fusion.lookback_rounds == 2
    assert fusion.publish_threshold == 0.6
    assert fusion.min_corroborating_sites == 2
