"""The Sysmon parsers: case 007's syslog lines, JSON exports, XML exports and .evtx files."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest

from agent.events import EventStats, LineRejected, Quarantine
from agent.sources import iter_file_events
from agent.sysmon import SysmonParser, event_from_xml

CASE_007 = "007-sysmon-linux-truncated-xml.input.log"


def case_007(cases_dir: Path, tmp_path: Path) -> tuple[dict, EventStats, Path]:
    stats = EventStats()
    quarantine = tmp_path / "quarantine.jsonl"
    events = list(iter_file_events(cases_dir / CASE_007, "sysmon", stats=stats, quarantine=Quarantine(quarantine)))
    return {event.line: event for event in events}, stats, quarantine


def test_case_007_complete_event_decodes_entities(cases_dir: Path, tmp_path: Path) -> None:
    events, _, _ = case_007(cases_dir, tmp_path)

    first = events[1]
    assert first.kind == "process_create"
    assert first.fields["CommandLine"] == 'bash -c "id > /tmp/o && cat < /etc/hostname"'
    assert (first.fields["Image"], first.fields["User"]) == ("/usr/bin/bash", "alice")
    assert (first.fields["ProcessId"], first.fields["ParentImage"]) == (4101, "/usr/sbin/sshd")
    assert first.fields["RuleName"] is None
    assert first.flags == frozenset()


def test_case_007_control_character_replaced_and_flagged(cases_dir: Path, tmp_path: Path) -> None:
    events, _, _ = case_007(cases_dir, tmp_path)

    fourth = events[4]
    assert fourth.fields["CommandLine"] == "printf a\ufffdb"
    assert fourth.flags == frozenset({"sanitized"})
    assert (fourth.fields["User"], fourth.fields["ProcessId"]) == ("alice", 4104)


def test_case_007_network_event_fields(cases_dir: Path, tmp_path: Path) -> None:
    events, _, _ = case_007(cases_dir, tmp_path)

    fifth = events[5]
    assert fifth.kind == "network_connect"
    assert (fifth.fields["SourceIp"], fifth.fields["SourcePort"]) == ("192.0.2.10", 51514)
    assert (fifth.fields["DestinationIp"], fifth.fields["DestinationPort"]) == ("198.51.100.20", 443)
    assert fifth.fields["DestinationHostname"] is None


def test_case_007_cut_event_salvaged_and_fragment_quarantined(cases_dir: Path, tmp_path: Path) -> None:
    events, stats, quarantine = case_007(cases_dir, tmp_path)

    salvaged = events[2]
    assert salvaged.flags == frozenset({"truncated"})
    assert salvaged.fields["EventID"] == 1
    assert salvaged.fields["UtcTime"] == "2024-05-01 10:00:02.200"
    assert salvaged.fields["ProcessGuid"] == "{5f1c3a2b-0002-6630-a1b2-000000000002}"
    assert salvaged.fields["Image"] == "/usr/bin/python3.11"
    assert 3 not in events
    assert dict(stats.errors) == {"orphan_fragment": 1}
    assert dict(stats.flags) == {"truncated": 1, "sanitized": 1}
    kept = [json.loads(line) for line in quarantine.read_text(encoding="utf-8").splitlines()]
    assert [(k["reason"], k["raw"][:40]) for k in kept] == [
        ("orphan_fragment", "May  1 10:00:03 web01 sysmon: ule_c.py</")]


def test_doctype_rejected_before_parsing() -> None:
    xml = '<!DOCTYPE x [<!ENTITY a "aaaa">]><Event><System><EventID>1</EventID></System></Event>'

    with pytest.raises(LineRejected) as rejected:
        event_from_xml(xml, source="a", line=1)

    assert rejected.value.reason == "doctype_forbidden"


def test_entity_without_semicolon_repaired() -> None:
    """Sysmon for Linux 1.0 writes ``&lt unknown process&gt``."""
    xml = ('<Event><System><Provider Name="Linux-Sysmon"/><EventID>5</EventID>'
           '<TimeCreated SystemTime="2022-05-11T18:10:22.020000000Z"/></System><EventData>'
           '<Data Name="Image">&lt unknown process&gt </Data></EventData></Event>')

    event = event_from_xml(xml, source="a", line=1)

    assert event is not None
    assert event.fields["Image"] == "< unknown process> "
    assert event.flags == frozenset({"sanitized"})


def test_other_provider_skipped_and_eventdata_read_by_name() -> None:
    other = '<Event><System><Provider Name="Microsoft-Windows-Security-Auditing"/><EventID>4624</EventID></System></Event>'
    reordered = ('<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
                 '<Provider Name="Microsoft-Windows-Sysmon"/><EventID>3</EventID></System><EventData>'
                 '<Data Name="DestinationPort">443</Data><Data Name="UtcTime">2024-05-01 10:00:00.000</Data>'
                 '<Data Name="SourcePort">5000</Data></EventData></Event>')

    skipped = event_from_xml(other, source="a", line=1)
    event = event_from_xml(reordered, source="a", line=2)

    assert skipped is None
    assert event is not None
    assert (event.fields["SourcePort"], event.fields["DestinationPort"]) == (5000, 443)


def test_orphan_fragment_and_missing_id_rejected() -> None:
    parser = SysmonParser()

    with pytest.raises(LineRejected) as fragment:
        parser.parse("</Data></EventData></Event>", source="a", line=1)
    with pytest.raises(LineRejected) as no_id:
        parser.parse("<Event><System></System></Event>", source="a", line=2)

    assert fragment.value.reason == "orphan_fragment"
    assert no_id.value.reason == "missing_field:EventID"


def test_xml_export_read_record_by_record(tmp_path: Path) -> None:
    export = tmp_path / "events.xml"
    good = ('<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
            '<Provider Name="Microsoft-Windows-Sysmon"/><EventID>22</EventID>'
            '<TimeCreated SystemTime="2024-05-01T10:00:00.1234567Z"/></System><EventData>'
            '<Data Name="QueryName">example.org</Data></EventData></Event>')
    export.write_text(f'<?xml version="1.0"?>\n<Events>{good}\n<Event><System><EventID>x</EventID></System>'
                      f'</Event>{good}</Events>', encoding="utf-8")
    stats = EventStats()

    events = list(iter_file_events(export, "sysmon", stats=stats))

    assert [e.kind for e in events] == ["dns_query", "dns_query"]
    assert events[0].fields["QueryName"] == "example.org"
    assert events[0].ts.isoformat() == "2024-05-01T10:00:00.123456+00:00"
    assert dict(stats.errors) == {"missing_field:EventID": 1}


def test_xml_unclosed_events_linear_time(tmp_path: Path) -> None:
    export = tmp_path / "events.xml"
    good = ('<Event><System><Provider Name="Microsoft-Windows-Sysmon"/><EventID>1</EventID>'
            '<TimeCreated SystemTime="2024-05-01T10:00:00Z"/></System></Event>')
    # 50,000 unclosed starts after a whole event: a lazy regular expression rescans the
    # 350 KB tail from each of them, minutes of work that str.find does in one pass.
    export.write_text(f'<?xml version="1.0"?>\n<Events>{good}\n<Eventx>{good}\n' + "<Event>" * 50_000 + "\n",
                      encoding="utf-8")
    stats = EventStats()

    events = list(iter_file_events(export, "sysmon", stats=stats))

    assert [event.kind for event in events] == ["process_create", "process_create"]
    # The unclosed starts are one record, cut at the end of the file.
    assert stats.lines == 3
    assert dict(stats.errors) == {"truncated_record": 1}


def test_xml_export_cut_inside_last_record(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The cut record is counted and reported with its file, not dropped."""
    export = tmp_path / "events.xml"
    good = ('<Event><System><Provider Name="Microsoft-Windows-Sysmon"/><EventID>1</EventID>'
            '<TimeCreated SystemTime="2024-05-01T10:00:00Z"/></System></Event>')
    export.write_text(f'<?xml version="1.0"?>\n<Events>{good}\n{good[:60]}', encoding="utf-8")
    stats = EventStats()

    with caplog.at_level(logging.WARNING, logger="agent.events"):
        events = list(iter_file_events(export, "sysmon", stats=stats))

    assert [event.kind for event in events] == ["process_create"]
    assert stats.lines == 2
    assert dict(stats.errors) == {"truncated_record": 1}
    assert caplog.messages == [f"log {export} line 2: the export ends inside this record, "
                               "before </Event>; line skipped"]


@pytest.mark.parametrize(("event_id", "reason"), [
    (float("inf"), "invalid_json"),  # json.dumps writes Infinity, which is not JSON
    (True, "missing_field:EventID"),
    (1.5, "missing_field:EventID"),
    ([1], "missing_field:EventID"),
    ({"id": 1}, "missing_field:EventID"),
])
def test_json_export_event_id_must_be_an_integer(event_id: object, reason: str) -> None:
    record = {"SourceName": "Microsoft-Windows-Sysmon", "EventID": event_id,
              "TimeCreated": "2024-05-01T10:00:00Z"}

    with pytest.raises(LineRejected) as rejected:
        SysmonParser().parse(json.dumps(record), source="a", line=1)

    assert rejected.value.reason == reason


def unzip(archive: Path, folder: Path) -> Path:
    with zipfile.ZipFile(archive) as opened:
        name = opened.namelist()[0]
        opened.extract(name, folder)
    return folder / name


@pytest.mark.shared_data
def test_otrf_windows_json_export_counts(shared_data_dir: Path, tmp_path: Path) -> None:
    """766 Sysmon records among 2,395; Security-Auditing and Eventlog records are skipped."""
    export = unzip(shared_data_dir / "otrf-security-datasets/atomic/windows/execution/host/psh_python_webserver.zip",
                   tmp_path)
    stats = EventStats()

    events = list(iter_file_events(export, "sysmon", stats=stats))

    assert dict(stats.events) == {"image_load": 254, "process_access": 451, "registry_object": 28,
                                  "registry_value_set": 23, "file_create": 4, "process_create": 3,
                                  "process_terminate": 2, "dns_query": 1}
    assert stats.skipped == 1629
    assert stats.errors_total == 0
    dns = next(e for e in events if e.kind == "dns_query")
    assert dns.fields["EventID"] == 22
    assert "Message" not in dns.fields


@pytest.mark.shared_data
def test_otrf_linux_syslog_json_counts(shared_data_dir: Path, tmp_path: Path) -> None:
    """93 Sysmon for Linux events; 16 use entities without semicolons and are repaired."""
    export = unzip(shared_data_dir / "otrf-security-datasets/compound/Log4Shell/"
                   "syslog_sysmon_log4shell_cve2021_44228_jndi_reference.zip", tmp_path)
    stats = EventStats()

    list(iter_file_events(export, "sysmon", stats=stats))

    assert dict(stats.events) == {"process_terminate": 50, "process_create": 31, "network_connect": 6,
                                  "file_create": 4, "file_delete": 2}
    assert stats.errors_total == 0
    assert stats.flags["sanitized"] == 16


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("relative", "kinds"),
    [
        ("automatedtestingtools/PanacheSysmon_vs_AtomicRedTeam01.evtx",
         {"process_create": 511, "registry_value_set": 30, "image_load": 5, "file_create": 4,
          "network_connect": 4, "registry_object": 3, "wmi_binding": 2, "wmi_consumer": 2, "wmi_filter": 2,
          "process_access": 1, "process_terminate": 1}),
        ("command_and_control/DE_sysmon-3-rdp-tun.evtx",
         {"network_connect": 42, "process_create": 13, "process_terminate": 12, "driver_load": 6}),
        ("discovery/discovery_sysmon_3_Invoke_UserHunter_SourceMachine.evtx", {"network_connect": 9}),
        ("credential_access/sysmon_10_lsass_mimikatz_sekurlsa_logonpasswords.evtx", {"process_access": 1}),
    ],
)
def test_evtx_attack_samples_counts(shared_data_dir: Path, relative: str, kinds: dict[str, int]) -> None:
    stats = EventStats()

    events = list(iter_file_events(shared_data_dir / "evtx-attack-samples" / relative, "sysmon", stats=stats))

    assert dict(stats.events) == kinds
    assert stats.errors_total == 0
    assert all(e.ts.year >= 2017 for e in events)


@pytest.mark.shared_data
def test_evtx_cut_inside_chunk_counts_error(shared_data_dir: Path, tmp_path: Path) -> None:
    """An .evtx file copied while it was written yields a counted error, not silence."""
    whole = (shared_data_dir / "evtx-attack-samples" / "command_and_control" / "DE_sysmon-3-rdp-tun.evtx").read_bytes()
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(whole[: len(whole) // 2])
    stats = EventStats()

    events = list(iter_file_events(cut, "sysmon", stats=stats))

    assert events == []
    assert dict(stats.errors) == {"truncated_file": 1}
