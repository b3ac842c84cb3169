"""Keep the intake timing script runnable: two envelopes, with real and with stub storage."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hub_intake_timing.py"


def run_script(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--envelopes", "2", *args],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@pytest.mark.slow
def test_intake_timing_sqlite_parts() -> None:
    output = run_script()

    assert re.match(r"2 envelopes of 1000, SQLite: median [0-9.]+ ms, mean [0-9.]+ ms", output)
    for part in ("commit", "inserts", "checkpoint wait"):
        assert re.search(rf"^  {part}: [0-9.]+ ms per envelope$", output, re.MULTILINE), part


@pytest.mark.slow
def test_intake_timing_stub_storage() -> None:
    output = run_script("--stub-storage")

    assert re.match(r"2 envelopes of 1000, stub storage: median [0-9.]+ ms", output)
    assert "commit" not in output
