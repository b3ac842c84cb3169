"""Detector training and calibration: range, ties, degenerate and tiny baselines."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest

from agent.detector import CalibratedDetector
from agent.errors import BaselineTooSmall, DegenerateBaseline
from agent.features import FEATURE_NAMES


def baseline(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(10.0, 1.0, size=(rows, len(FEATURE_NAMES)))
    return np.abs(matrix)


@pytest.mark.parametrize("name", ["iforest", "ecod", "hbos"])
def test_scores_are_calibrated_into_unit_interval(name: str) -> None:
    detector = CalibratedDetector(name).fit(baseline(200))
    outlier = np.full((1, len(FEATURE_NAMES)), 1000.0)

    scores = detector.score(np.vstack([baseline(50, seed=1), outlier]))

    assert np.all(np.isfinite(scores))
    assert scores.min() >= 0.0
    assert scores.max() <= 1.0
    assert scores[-1] >= 0.99


@pytest.mark.parametrize("name", ["iforest", "ecod", "hbos"])
def test_outliers_rank_above_inliers(name: str) -> None:
    """Quality floor on labelled synthetic data: every outlier outranks the inlier median."""
    detector = CalibratedDetector(name).fit(baseline(300))
    inliers = baseline(100, seed=2)
    outliers = baseline(10, seed=3) * 8.0

    inlier_scores, outlier_scores = detector.score(inliers), detector.score(outliers)

    assert outlier_scores.min() > np.median(inlier_scores)


def test_calibration_midrank_for_ties() -> None:
    detector = CalibratedDetector("iforest")
    detector.baseline_scores_ = np.array([1.0, 2.0, 2.0, 2.0, 3.0])

    calibrated = detector.calibrate(np.array([2.0, 0.5, 3.5, 3.0]))

    assert calibrated.tolist() == pytest.approx([0.5, 0.0, 1.0, 0.9])


def test_baseline_too_small_raises() -> None:
    with pytest.raises(BaselineTooSmall) as excinfo:
        CalibratedDetector("iforest", min_baseline_windows=32).fit(baseline(10))

    assert (excinfo.value.windows, excinfo.value.required) == (10, 32)
    assert "detector.baseline_rounds" in str(excinfo.value)


def test_constant_baseline_raises() -> None:
    constant = np.ones((64, len(FEATURE_NAMES)))

    with pytest.raises(DegenerateBaseline) as excinfo:
        CalibratedDetector("ecod").fit(constant)

    assert excinfo.value.windows == 64


def test_constant_columns_are_dropped_not_nan() -> None:
    matrix = baseline(100)
    matrix[:, 0] = 5.0
    detector = CalibratedDetector("ecod").fit(matrix)

    scores = detector.score(baseline(20, seed=4))

    assert not detector.feature_mask_[0]
    assert np.all(np.isfinite(scores))


def test_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    detector = CalibratedDetector("hbos").fit(baseline(100))
    path = tmp_path / "detector.pickle"
    detector.save(path)

    loaded = CalibratedDetector.load(path, name="hbos")

    assert loaded is not None
    sample = baseline(5, seed=9)
    assert loaded.score(sample).tolist() == detector.score(sample).tolist()
    assert CalibratedDetector.load(path, name="iforest") is None


def test_agent_import_leaves_pyod_unloaded() -> None:
    """The agent loads pyod, scikit-learn and numba only when it trains or scores."""
    code = ("import sys, agent.service, agent.live\n"
            "from agent.detector import CalibratedDetector\n"
            "version = CalibratedDetector('iforest').version\n"
            "print(version, sorted(m for m in ('pyod', 'sklearn', 'numba') if m in sys.modules))")

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)

    version, loaded = result.stdout.split(" ", 1)
    assert version == f"pyod-{importlib.metadata.version('pyod')}/iforest/network-1"
    assert loaded.strip() == "[]"
