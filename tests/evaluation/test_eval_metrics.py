"""Flow-level detection metrics and detection latency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import detection_latencies, detection_metrics


def test_detection_metrics_counts_and_rates() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    decisions = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.4, 0.0])

    metrics = detection_metrics(labels, decisions, scores)

    assert (metrics["tp"], metrics["fp"], metrics["fn"], metrics["tn"]) == (2, 1, 1, 4)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["fpr"] == pytest.approx(1 / 5)
    assert metrics["auroc"] == pytest.approx(13 / 15)


def test_detection_metrics_one_class_has_no_auroc() -> None:
    metrics = detection_metrics(np.zeros(3, dtype=bool), np.zeros(3, dtype=bool), np.zeros(3))

    assert math.isnan(metrics["auroc"])
    assert math.isnan(metrics["pr_auc"])
    assert metrics["f1"] == 0.0


def test_detection_latencies_per_source() -> None:
    keys = [("a", "x"), ("a", "x"), ("a", "x"), ("a", "y"), ("b", "x")]
    rounds = np.array([2, 3, 5, 4, 1])
    labels = np.array([1, 1, 1, 1, 0], dtype=bool)
    decisions = np.array([0, 0, 1, 1, 1], dtype=bool)

    assert detection_latencies(keys, rounds, labels, decisions) == [0, 3]
