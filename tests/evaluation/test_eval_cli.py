"""`fti eval` rejects a bad seed or output folder before it reads any capture."""

from __future__ import annotations

from pathlib import Path

import pytest

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
