"""Tests of the append-only NDJSON writer shared by the SIEM file sinks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from siem_integrations.errors import SinkWriteFailed
from siem_integrations.ndjson_file import NdjsonAppender, dump_line


def test_append_batches_one_line_each(tmp_path: Path) -> None:
    appender = NdjsonAppender(tmp_path / "out.ndjson")

    appender.append([dump_line({"a": 1}), dump_line({"b": "x"})])
    appender.append([dump_line({"c": [1, 2]})])

    lines = (tmp_path / "out.ndjson").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"a": 1}, {"b": "x"}, {"c": [1, 2]}]


def test_append_syncs_each_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    appender = NdjsonAppender(tmp_path / "out.ndjson")

    appender.append([dump_line({"a": 1})])
    after_create = len(synced)
    appender.append([dump_line({"b": 2})])

    assert after_create == 2  # the file, then its new directory entry
    assert len(synced) == 3


def test_append_after_torn_line_starts_new_line(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "out.ndjson"
    path.write_text('{"ok": 1}\n{"torn": ')

    NdjsonAppender(path).append([dump_line({"next": 2})])

    lines = path.read_text().splitlines()
    assert lines == ['{"ok": 1}', '{"torn": ', '{"next":2}']
    assert "ends without a newline" in caplog.text


def test_dump_line_escapes_line_separators() -> None:
    line = dump_line({"text": "a\u2028b\nc"})

    assert "\u2028" not in line
    assert "\n" not in line
    assert json.loads(line) == {"text": "a\u2028b\nc"}


def test_append_missing_folder_raises(tmp_path: Path) -> None:
    appender = NdjsonAppender(tmp_path / "absent" / "out.ndjson")

    with pytest.raises(SinkWriteFailed) as excinfo:
        appender.append(["{}"])

    assert excinfo.value.path == tmp_path / "absent" / "out.ndjson"
    assert "No such file or directory" in excinfo.value.reason
