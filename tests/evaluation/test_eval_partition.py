"""Dirichlet non-IID partition and the CIC-IDS2017 sites written as Zeek logs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evaluation.partition import CICIDS_ONE_SITE_CLASSES, dirichlet_partition, write_cicids_sites


def test_dirichlet_partition_one_site_classes_stay_whole() -> None:
    labels = ["a"] * 300 + ["b"] * 300 + ["rare"] * 20

    sites = dirichlet_partition(labels, n_sites=5, alpha=0.5, one_site_classes=("rare",),
                                rng=np.random.default_rng(4))

    assert len(set(sites[600:].tolist())) == 1
    assert set(sites.tolist()) <= set(range(5))


def test_dirichlet_partition_small_alpha_is_skewed() -> None:
    """Averaged over seeds, the largest site share is high for small alpha, even for large."""
    labels = ["a"] * 1000

    def mean_largest_share(alpha: float) -> float:
        shares = []
        for seed in range(20):
            sites = dirichlet_partition(labels, n_sites=4, alpha=alpha, one_site_classes=(),
                                        rng=np.random.default_rng(seed))
            shares.append(max(Counter(sites.tolist()).values()) / len(labels))
        return float(np.mean(shares))

    assert mean_largest_share(0.05) > 0.8
    assert mean_largest_share(100.0) < 0.35


def test_dirichlet_partition_rejects_one_site() -> None:
    with pytest.raises(ValueError, match="n_sites must be >= 2; got 1"):
        dirichlet_partition(["a"], n_sites=1, alpha=1.0, one_site_classes=(),
                            rng=np.random.default_rng(0))


def test_write_cicids_sites_keeps_every_flow(shared_data_dir: Path, tmp_path: Path) -> None:
    specs, (first, last) = write_cicids_sites(shared_data_dir, tmp_path, n_sites=10, alpha=0.5,
                                              seed=0)

    classes_per_site = []
    total = 0
    for spec in specs:
        lines = (tmp_path / spec.capture).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        total += len(records)
        classes_per_site.append({r["detailed-label"] for r in records})
        assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    assert total == 25127
    assert last - first > 3 * 86400
    for rare in CICIDS_ONE_SITE_CLASSES:
        assert sum(rare in classes for classes in classes_per_site) == 1
