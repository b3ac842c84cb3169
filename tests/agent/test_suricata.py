"""The Suricata EVE JSON parser: case 006 framing on a followed file, and real eve.json counts."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.events import EventStats, LineRejected, LineReporter, Quarantine
from agent.sources import iter_file_events, parse_line
from agent.suricata import SuricataParser
from agent.tailer import LogTailer

CASE_006 = "006-eve-json-line-framing.input.json"
REST_OF_5005 = b',"dns":{"type":"query","rrname":"www.example.org","rrtype":"A"}}\n'


def follow_case_006(cases_dir: Path, tmp_path: Path) -> tuple[list, list, EventStats, Path]:
    eve = tmp_path / "eve.json"
    eve.write_bytes((cases_dir / CASE_006).read_bytes())
    quarantine = tmp_path / "quarantine.jsonl"
    stats = EventStats()
    reporter = LineReporter(str(eve), stats, quarantine=Quarantine(quarantine))
    parser = SuricataParser()
    tailer = LogTailer([str(eve)])

    def read() -> list:
        events = []
        for number, line in enumerate(tailer.poll(), start=stats.lines + 1):
            event = parse_line(parser, line.data, truncated=line.truncated, line=number, offset=line.offset,
                               stats=stats, reporter=reporter)
            if event is not None:
                events.append(event)
        return events

    before = read()
    with eve.open("ab") as stream:
        stream.write(REST_OF_5005)
    after = read()
    return before, after, stats, quarantine


def test_case_006_events_and_one_counted_error(cases_dir: Path, tmp_path: Path) -> None:
    before, after, stats, _ = follow_case_006(cases_dir, tmp_path)

    assert [e.fields["flow_id"] for e in before] == [5001, 5004]
    assert [e.fields["flow_id"] for e in after] == [5005]
    assert dict(stats.errors) == {"invalid_json": 1}


def test_case_006_user_agent_keeps_u2028(cases_dir: Path, tmp_path: Path) -> None:
    before, _, _, _ = follow_case_006(cases_dir, tmp_path)

    assert before[0].fields["http.http_user_agent"] == "Mozilla/5.0\u2028X-Probe: 1"


def test_case_006_completed_line_is_whole(cases_dir: Path, tmp_path: Path) -> None:
    _, after, _, _ = follow_case_006(cases_dir, tmp_path)

    assert after[0].kind == "dns"
    assert after[0].fields["dns.rrname"] == "www.example.org"


def test_case_006_corrupt_line_quarantined_with_offset(cases_dir: Path, tmp_path: Path) -> None:
    _, _, _, quarantine = follow_case_006(cases_dir, tmp_path)
    data = (cases_dir / CASE_006).read_bytes()

    records = [json.loads(line) for line in quarantine.read_text(encoding="utf-8").splitlines()]

    assert len(records) == 1
    assert records[0]["reason"] == "invalid_json"
    assert records[0]["offset"] == data.index(b"\n") + 1
    assert '"flow_id":5002' in records[0]["raw"]


def test_case_006_timestamp_without_colon_offset(cases_dir: Path, tmp_path: Path) -> None:
    before, _, _, _ = follow_case_006(cases_dir, tmp_path)

    assert before[0].ts == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "not_json_object"),
        ('{"timestamp": "2024-05-01T10:00:00+0000"}', "missing_field:event_type"),
        ('{"event_type": "alert"}', "missing_field:timestamp"),
        ('{"event_type": "alert", "timestamp": "yesterday"}', "invalid_timestamp"),
        ('{"event_type": "alert", "timestamp": "2024-05-01T10:00:00"}', "invalid_timestamp"),
        ("{" * 100000, "invalid_json"),
    ],
)
def test_invalid_lines_rejected_with_reason(line: str, reason: str) -> None:
    with pytest.raises(LineRejected) as rejected:
        SuricataParser().parse(line, source="eve.json", line=1)

    assert rejected.value.reason == reason


def test_other_event_types_skipped() -> None:
    line = '{"event_type": "stats", "timestamp": "2024-05-01T10:00:00+0000"}'

    assert SuricataParser().parse(line, source="eve.json", line=1) is None


def test_nested_fields_flattened() -> None:
    line = ('{"event_type": "tls", "timestamp": "2024-05-01T10:00:00.5+0200", '
            '"tls": {"sni": "example.org", "ja3": {"hash": "abc"}}}')

    event = SuricataParser().parse(line, source="eve.json", line=1)

    assert event is not None
    assert event.fields["tls.sni"] == "example.org"
    assert event.fields["tls.ja3.hash"] == "abc"
    assert event.ts == datetime(2024, 5, 1, 8, 0, 0, 500000, tzinfo=timezone.utc)


@pytest.mark.shared_data
def test_slips_eve_json_counts(shared_data_dir: Path) -> None:
    """5,000 lines: 3,512 flow, 745 alert, 680 dns, 56 http, 1 tls; 6 fileinfo/anomaly skipped."""
    stats = EventStats()

    events = list(iter_file_events(shared_data_dir / "slips" / "suricata" / "test6-malicious.suricata.json",
                                   "suricata", stats=stats))

    assert dict(stats.events) == {"flow": 3512, "alert": 745, "dns": 680, "http": 56, "tls": 1}
    assert stats.skipped == 6
    assert stats.errors_total == 0
    assert events[0].fields["alert.signature_id"] == 2403388
    assert events[0].ts == datetime(2021, 6, 6, 13, 59, 46, 457984, tzinfo=timezone.utc)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_number_rejected_as_invalid_json(number: str) -> None:
    """Python's json reads these, but they are not JSON, and `fti agent parse` could not print them back."""
    line = ('{"timestamp": "2024-05-01T10:00:00.000000+0000", "event_type": "flow", "src_ip": "10.0.0.1", '
            f'"dest_ip": "8.8.8.8", "dest_port": 53, "flow": {{"bytes_toserver": {number}}}}}')

    with pytest.raises(LineRejected) as rejected:
        SuricataParser().parse(line, source="eve.json", line=1)

    assert rejected.value.reason == "invalid_json"
