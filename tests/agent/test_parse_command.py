"""``fti agent parse``: events as JSON lines on stdout, counts on stderr, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fti.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict], list[dict]]:
    status = main(["agent", "parse", *args])
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    counts = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    return status, events, counts


def test_parse_sshd_prints_events_and_counts(cases_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, events, counts = run(capsys, "--source-type", "sshd",
                                 str(cases_dir / "009-authlog-yearless-timestamps.input.log"))

    assert status == 0
    assert [e["kind"] for e in events] == ["failed_password", "failed_password", "accepted_publickey",
                                           "session_opened", "invalid_user"]
    assert events[4]["ts"] == "2025-01-01T00:00:05.123456Z"
    assert counts[0]["events_by_kind"]["failed_password"] == 2
    assert counts[-1] == {"total": {"files": 1, "lines": 5, "events": 5, "skipped": 0, "errors": 0}}


def test_parse_counts_errors_and_quarantines(cases_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    quarantine = tmp_path / "rejected.jsonl"

    status, events, counts = run(capsys, "--source-type", "sysmon", "--quarantine", str(quarantine),
                                 str(cases_dir / "007-sysmon-linux-truncated-xml.input.log"))

    assert status == 0
    assert len(events) == 4
    assert counts[0]["errors_by_reason"] == {"orphan_fragment": 1}
    assert counts[0]["flags"] == {"sanitized": 1, "truncated": 1}
    assert json.loads(quarantine.read_text(encoding="utf-8"))["reason"] == "orphan_fragment"


def test_parse_zeek_records(cases_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, events, counts = run(capsys, "--source-type", "zeek",
                                 str(cases_dir / "001-zeek-tsv-json-value-semantics.input.log"))

    assert status == 0
    assert {e["kind"] for e in events} == {"http"}
    assert counts[0]["events"] == len(events) == 3


def test_parse_missing_file_reported_and_others_read(cases_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, events, counts = run(capsys, "--source-type", "sshd", str(tmp_path / "absent.log"),
                                 str(cases_dir / "009-authlog-yearless-timestamps.input.log"))

    assert status == 1
    assert len(events) == 5
    assert "absent.log" in counts[0]["error"]
    assert counts[-1]["total"]["files"] == 1


def test_parse_unknown_time_zone_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["agent", "parse", "--source-type", "sshd", "--timezone", "Mars/Base", "auth.log"])

    assert status == 2
    assert "--timezone must be an IANA time zone such as Europe/Berlin; got 'Mars/Base'" in capsys.readouterr().err


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_parse_zeek_quarantines_rejected_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               compress: bool) -> None:
    """Each rejected Zeek line is kept with its byte offset, after a NUL hole too."""
    row = b'{"ts":1655071198.4,"id.orig_h":"10.0.0.5","id.orig_p":1,"id.resp_h":"8.8.8.8","id.resp_p":53}'
    bad_port = row.replace(b'"id.resp_p":53', b'"id.resp_p":70000')
    data = row + b"\n" + b"\x00" * 5000 + b"{not json\r\n" + row + b"\n" + bad_port + b"\n"
    log_file = tmp_path / "conn.log"
    if compress:
        import gzip
        log_file = tmp_path / "conn.log.gz"
        log_file.write_bytes(gzip.compress(data))
    else:
        log_file.write_bytes(data)
    quarantine = tmp_path / "rejected.jsonl"

    status, events, _ = run(capsys, "--source-type", "zeek", "--quarantine", str(quarantine), str(log_file))

    quarantined = [json.loads(line) for line in quarantine.read_text(encoding="utf-8").splitlines()]
    assert status == 0
    assert len(events) == 2
    assert [(item["reason"], item["offset"], item["raw"]) for item in quarantined] == [
        ("invalid_json", len(row) + 1 + 5000, "{not json"),
        ("invalid_value:id.resp_p", data.index(bad_port), bad_port.decode()),
    ]


def test_quarantine_keeps_bounded_recent_lines(tmp_path: Path) -> None:
    """The bytes kept for the quarantine stay bounded however long the lines, and the newest line is kept."""
    from agent.events import Quarantine
    from agent.zeek_records import RECENT_BYTES, RECENT_LINES, MalformedLineReporter, ParseStats

    reporter = MalformedLineReporter("conn.log", ParseStats(), quarantine=Quarantine(tmp_path / "q.jsonl"))
    for number in range(1, 2001):
        reporter.remember(number, number * 10_000, b"x" * 10_000)
    kept_lines, kept_bytes = len(reporter._recent), reporter._recent_bytes
    reporter.remember(2001, 0, b"y" * (RECENT_BYTES + 1))

    assert kept_lines <= RECENT_LINES
    assert kept_bytes <= RECENT_BYTES
    assert list(reporter._recent) == [2001]
    reporter.report(2001, "line_too_long", "too long")
    assert json.loads((tmp_path / "q.jsonl").read_text())["raw"] == "y" * (RECENT_BYTES + 1)
