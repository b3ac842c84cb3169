"""Keep the signature cost benchmark runnable on a small round."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_signing_benchmark_small_round_reports_costs() -> None:
    # The script imports the round setup of secagg_bench.py from its own folder.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("secagg_signing_bench", BENCHMARKS / "secagg_signing_bench.py")
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        result = bench.measure(10)
    finally:
        sys.path.remove(str(BENCHMARKS))

    assert result["threshold"] == 7
    assert result["neighbours"] == 9
    # 9 advertisements and 7 consistency signatures at the site, 10 and 9 at the hub.
    assert result["verified"] == 35
    assert result["site_ms"] > 0
    assert result["hub_ms"] > 0
