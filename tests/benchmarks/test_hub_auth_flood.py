"""Keep the password-flood benchmark runnable: one short run with cheap argon2id, checked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from fusion_hub.config import AuthSettings

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hub_auth_flood.py"


@pytest.mark.slow
def test_flood_benchmark_short_run() -> None:
    spec = importlib.util.spec_from_file_location("hub_auth_flood", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["hub_auth_flood"] = bench
    spec.loader.exec_module(bench)
    auth = AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1,
                        credential_cache_seconds=0.0, max_failures_per_address=3)

    result = bench.run("defaults", auth, seconds=2.0, flood_threads=2)

    assert result["label"] == "defaults"
    assert set(result["logins"]) == {200}
    assert sum(result["logins"].values()) >= 1
    assert 0 < result["median_ms"] <= result["max_ms"]
    assert result["flood"][401] == 3
    assert result["flood"][429] > 0
