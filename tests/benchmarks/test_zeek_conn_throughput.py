"""Keep the reader benchmark runnable: each measurement on a small input counts every line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "zeek_conn_throughput.py"


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("zeek_conn_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["split-and-type", "fti-reader", "fti-reader-json", "fti-tail-parse",
                                  "fti-tail-parse-json", "fti-pipeline", "fti-pipeline-blocks",
                                  "fti-pipeline-blocks-json"])
def test_conn_measurement_counts_every_line(bench, shared_data_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            name: str) -> None:
    conn_log = shared_data_dir / "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled"
    tsv, jsonl = bench.build_inputs(conn_log, 3000, tmp_path)

    result = bench.run_child(name, {"tsv": tsv, "json": jsonl})

    # The TSV readers that see every line also count the 8 header lines.
    header_lines = 8 if name in ("fti-tail-parse", "fti-pipeline", "fti-pipeline-blocks") else 0
    assert result["lines"] == 3000 + header_lines
    assert result["lines_per_second"] > 0
    assert result["peak_rss_mib"] > 0


@pytest.mark.parametrize("name", ["sshd", "suricata", "sysmon"])
def test_parser_measurement_counts_every_line(bench, shared_data_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              name: str) -> None:
    source = bench.build_parser_input(shared_data_dir / bench.PARSER_INPUTS[name], 2500, tmp_path)

    result = bench.run_child(name, {"tsv": tmp_path / "unused", "json": tmp_path / "unused", name: source})

    assert result["lines"] == 2500
    assert result["lines_per_second"] > 0
