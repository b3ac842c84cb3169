"""Detection metrics over labelled flows: counts, F1, AUROC, PR-AUC and latency."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def detection_metrics(labels: np.ndarray, decisions: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Return precision, recall, F1, false-positive rate, AUROC, PR-AUC and the confusion counts.

    AUROC and PR-AUC need both classes; with one class they are NaN.
    """
    labels = labels.astype(bool)
    decisions = decisions.astype(bool)
    tp = int(np.sum(labels & decisions))
    fp = int(np.sum(~labels & decisions))
    fn = int(np.sum(labels & ~decisions))
    tn = int(np.sum(~labels & ~decisions))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = labels.any() and (~labels).any()
    return {
        "precision": precision, "recall": recall, "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "auroc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def detection_latencies(
    keys: Sequence[tuple[str, str]], rounds: np.ndarray, labels: np.ndarray, decisions: np.ndarray
) -> list[int]:
    """Return, per malicious source, the rounds from its first malicious flow to its first alert.

    A source is a (site, remote address or internal entity) pair. Sources never detected are
    left out; their share shows in the recall.
    """
    first_seen: dict[tuple[str, str], int] = {}
    first_alert: dict[tuple[str, str], int] = {}
    for key, round_index, label, decision in zip(keys, rounds, labels, decisions):
        if not label:
            continue
        first_seen[key] = min(first_seen.get(key, round_index), round_index)
        if decision:
            first_alert[key] = min(first_alert.get(key, round_index), round_index)
    return sorted(int(first_alert[k] - first_seen[k]) for k in first_alert)
