"""`fti eval` rejects bad arguments before it reads any capture, and cleans up when stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.errors import LogReadError
from evaluation.datasets import SiteSpec, load_site
from fti.cli import main


def test_eval_negative_seed_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["eval", "--scenario", "iot23", "--quick", "--seed", "-1",
                   "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)])

    stderr = capsys.readouterr().err
    assert status == 2
    assert "invalid --seed -1" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_eval_out_file_rejected_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An --out that is a file fails before the run, not after it, where the results are lost."""
    out = tmp_path / "results"
    out.write_text("keep\n", encoding="utf-8")

    # The data folder contains no capture, so reaching the run would fail with another message.
    status = main(["eval", "--scenario", "iot23", "--quick", "--out", str(out),
                   "--data-dir", str(tmp_path)])

    stderr = capsys.readouterr().err
    assert status == 2
    assert f"cannot create the output folder {out}" in stderr
    assert "not found below" not in stderr
    assert out.read_text(encoding="utf-8") == "keep\n"


@pytest.mark.slow
def test_eval_sigterm_removes_temporary_folders(shared_data_dir: Path, tmp_path: Path) -> None:
    """SIGTERM during the fusion rounds stops the run and removes its hub database."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = [sys.executable, "-m", "fti.cli", "eval", "--scenario", "iot23", "--quick",
               "--out", str(tmp_path / "out"), "--data-dir", str(shared_data_dir)]
    process = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(temporary)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The in-process hub's folder appears once every site is read and scored.
        deadline = time.monotonic() + 240
        while not list(temporary.glob("fti-eval-hub-*")) and time.monotonic() < deadline:
            assert process.poll() is None, "fti eval ended before its first fusion round"
            time.sleep(0.2)
        assert list(temporary.glob("fti-eval-hub-*")), "no hub folder appeared within 240 s"

        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    assert status == 128 + signal.SIGTERM
    assert list(temporary.iterdir()) == []
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize(("column", "value"), [("ts", "notatime"), ("orig_bytes", "12kB"),
                                               ("orig_pkts", "inf"), ("ts", "nan"), ("ts", "inf")])
def test_eval_csv_bad_number_named(tmp_path: Path, column: str, value: str) -> None:
    """A non-numeric value in a CSV capture's numeric column names the file, line and column."""
    header = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
              "orig_bytes", "orig_pkts", "label"]
    good = ["1547150789.067208", "C1", "192.168.1.199", "59222", "46.101.251.17", "80", "tcp",
            "149", "3", "Benign"]
    bad = dict(zip(header, good), **{column: value})
    capture = tmp_path / "capture.csv"
    capture.write_text(",".join(header) + "\n" + ",".join(good) + "\n"
                       + ",".join(bad[name] for name in header) + "\n", encoding="utf-8")
    spec = SiteSpec("site-a", "capture.csv", "one bad line")

    with pytest.raises(LogReadError) as raised:
        load_site(spec, data_dir=tmp_path, work_dir=tmp_path / "work", rounds=4, window_seconds=60,
                  baseline_rounds=1, min_baseline_windows=16, random_state=0)

    message = str(raised.value)
    assert str(capture) in message
    assert "line 3" in message
    assert f"invalid {column} {value!r}" in message
