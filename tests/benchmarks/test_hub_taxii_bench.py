"""Keep the TAXII hub benchmark runnable: every measurement at a tiny size, checked for sense."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hub_taxii_bench.py"


@pytest.mark.slow
def test_benchmark_tiny_run_measures_everything(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("hub_taxii_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["hub_taxii_bench"] = bench
    spec.loader.exec_module(bench)
    sizes = bench.Sizes(add_total=40, envelope_sizes=(10, 20), paging_total=30, page_limit=10,
                        scale_small=40, scale_large=300, first_page_small=20)

    # SQLite only, because the storage contract suite covers the PostgreSQL bulk path.
    results = bench.run(sizes, folder=tmp_path, in_process=True)

    for envelope_size in (10, 20):
        assert results[f"medallion_add_{envelope_size}"] > 0
    assert results["medallion_paging_secs"] > 0
    for key in ("add_10_ratio", "add_20_ratio", "paging_ratio", "add_scale_ratio",
                "first_page_scale_ratio", "preload_large_secs"):
        assert results[f"sqlite_{key}"] > 0, key
    assert "postgresql_paging_ratio" not in results
