"""Keep the secure aggregation benchmark runnable: one small round must sum correctly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "secagg_bench.py"


def test_benchmark_small_round_sums_correctly() -> None:
    spec = importlib.util.spec_from_file_location("secagg_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    result = bench.run(10, 64, 0.2)

    assert result["correct"] == 1.0
    assert result["dropped"] == 2.0
    assert result["hub_secs"] > 0
