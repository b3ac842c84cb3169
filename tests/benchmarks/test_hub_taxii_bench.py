"""Keep the TAXII hub benchmark runnable: every measurement at a tiny size, checked for sense."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hub_taxii_bench.py"


def load_benchmark() -> ModuleType:
    """Import the benchmark script as the module ``hub_taxii_bench``."""
    spec = importlib.util.spec_from_file_location("hub_taxii_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["hub_taxii_bench"] = bench
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_benchmark_tiny_run_measures_everything(tmp_path: Path) -> None:
    bench = load_benchmark()
    sizes = bench.Sizes(add_total=40, envelope_sizes=(10, 20), paging_total=30, page_limit=10,
                        scale_small=40, scale_large=300, first_page_small=20)

    # SQLite only, because the storage contract suite covers the PostgreSQL bulk path.
    results = bench.run(sizes, folder=tmp_path, in_process=True)

    for envelope_size in (10, 20):
        assert results[f"medallion_add_{envelope_size}"] > 0
    assert results["medallion_paging_secs"] > 0
    for key in ("add_10_ratio", "add_20_ratio", "paging_ratio", "add_10_scale_ratio",
                "add_20_scale_ratio", "first_page_scale_ratio", "preload_large_secs"):
        assert results[f"sqlite_{key}"] > 0, key
    assert results["sqlite_add_20_scale_ratio"] == pytest.approx(
        results["sqlite_add_20_at_large"] / results["sqlite_add_20_at_small"])
    assert "postgresql_paging_ratio" not in results


@pytest.mark.slow
def test_benchmark_adding_only_run(tmp_path: Path) -> None:
    bench = load_benchmark()
    sizes = bench.Sizes(add_total=30, envelope_sizes=(10,))

    results = bench.run(sizes, folder=tmp_path, in_process=True, measurements=("adding",))

    assert results["medallion_add_10"] > 0
    assert results["sqlite_add_10_ratio"] == pytest.approx(
        results["sqlite_add_10"] / results["medallion_add_10"])
    assert "medallion_paging_secs" not in results
    assert "sqlite_add_10_at_small" not in results
