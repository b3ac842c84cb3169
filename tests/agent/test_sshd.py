"""The sshd auth.log parser: case 009's year-less timestamps, each line form, hostile user names."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.events import EventStats, LineRejected
from agent.sources import iter_file_events
from agent.sshd import SshdParser

UTC = timezone.utc
CASE_009 = "009-authlog-yearless-timestamps.input.log"

EXPECTED_009 = [
    ("2024-12-31T23:59:58+00:00", "failed_password", "admin", True, "203.0.113.9", 52144),
    ("2024-12-31T23:59:59+00:00", "failed_password", "alice", False, "203.0.113.9", 52150),
    ("2025-01-01T00:00:01+00:00", "accepted_publickey", "alice", False, "192.0.2.44", 40022),
    ("2025-01-01T00:00:02+00:00", "session_opened", "alice", False, None, None),
    ("2025-01-01T00:00:05.123456+00:00", "invalid_user", "test", True, "203.0.113.9", 52160),
]


def parse(line: str, *, reference: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> dict:
    event = SshdParser(reference=reference).parse(line, source="auth.log", line=1)
    assert event is not None
    return {"ts": event.ts.isoformat(), "kind": event.kind, **event.fields}


@pytest.mark.parametrize("read_at", [datetime(2025, 1, 1, 0, 0, 10, tzinfo=UTC),
                                     datetime(2025, 3, 15, 12, 0, 0, tzinfo=UTC)])
def test_case_009_same_events_live_and_backlog(cases_dir: Path, tmp_path: Path, read_at: datetime) -> None:
    """The year comes from the file's mtime, so a backlog read in March gives the same years."""
    log_file = tmp_path / "auth.log"
    log_file.write_bytes((cases_dir / CASE_009).read_bytes())
    mtime = datetime(2025, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()
    os.utime(log_file, (read_at.timestamp(), mtime))
    stats = EventStats()

    events = list(iter_file_events(log_file, "sshd", stats=stats))

    got = [(e.ts.isoformat(), e.kind, e.fields["user"], e.fields["invalid_user"], e.fields["src_ip"],
            e.fields["src_port"]) for e in events]
    assert got == EXPECTED_009
    assert stats.errors_total == 0


def test_yearless_month_after_reference_is_previous_year() -> None:
    assert parse("Dec 31 23:59:58 h sshd[1]: Invalid user x from 192.0.2.1 port 1",
                 reference=datetime(2025, 1, 1, tzinfo=UTC))["ts"] == "2024-12-31T23:59:58+00:00"
    assert parse("Dec 31 23:59:58 h sshd[1]: Invalid user x from 192.0.2.1 port 1",
                 reference=datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))["ts"] == "2025-12-31T23:59:58+00:00"


def test_configured_time_zone_applies_to_yearless_lines() -> None:
    parser = SshdParser(reference=datetime(2025, 6, 1, tzinfo=UTC), tz=ZoneInfo("Europe/Berlin"))

    event = parser.parse("Jun  1 12:00:00 h sshd[1]: Invalid user x from 192.0.2.1 port 1", source="a", line=1)

    assert event is not None
    assert event.ts.isoformat() == "2025-06-01T10:00:00+00:00"


def test_rfc3339_offset_honoured() -> None:
    fields = parse("2025-01-01T02:00:05+02:00 h sshd[1]: Invalid user x from 192.0.2.1 port 1")

    assert fields["ts"] == "2025-01-01T00:00:05+00:00"


def test_user_name_with_fake_from_clause_keeps_real_address() -> None:
    fields = parse("Jan  1 00:00:00 h sshd[9]: Failed password for invalid user x from 10.9.9.9 port 1 "
                   "from 203.0.113.7 port 4242 ssh2")

    assert fields["user"] == "x from 10.9.9.9 port 1"
    assert fields["src_ip"] == "203.0.113.7"
    assert fields["src_port"] == 4242


@pytest.mark.parametrize(
    ("message", "kind", "user"),
    [
        ("Accepted password for bob from 192.0.2.1 port 22 ssh2", "accepted_password", "bob"),
        ("Failed publickey for bob from 192.0.2.1 port 22 ssh2: RSA SHA256:abc", "failed_publickey", "bob"),
        ("Failed none for invalid user guest from 192.0.2.1 port 22 ssh2", "failed_none", "guest"),
        ("Failed keyboard-interactive/pam for root from 192.0.2.1 port 22 ssh2", "failed_keyboard-interactive",
         "root"),
        ("pam_unix(sshd:session): session closed for user bob", "session_closed", "bob"),
    ],
)
def test_line_forms_give_kind_and_user(message: str, kind: str, user: str) -> None:
    fields = parse(f"Jan  1 00:00:00 h sshd[1]: {message}")

    assert (fields["kind"], fields["user"]) == (kind, user)


def test_repeated_message_counts_repeats() -> None:
    fields = parse("Dec 10 07:13:56 LabSZ sshd[24227]: message repeated 5 times: "
                   "[ Failed password for root from 5.36.59.76 port 42393 ssh2]")

    assert (fields["kind"], fields["repeat"], fields["src_ip"]) == ("failed_password", 5, "5.36.59.76")


def test_host_name_source_kept_apart_from_ip() -> None:
    fields = parse("Jan  1 00:00:00 h sshd[1]: Invalid user x from scanner.example.net port 5")

    assert fields["src_ip"] is None
    assert fields["src_host"] == "scanner.example.net"


def test_other_program_and_other_sshd_lines_skipped() -> None:
    parser = SshdParser(reference=datetime(2025, 1, 1, tzinfo=UTC))

    assert parser.parse("Jan  1 00:00:00 h CRON[5]: (root) CMD (true)", source="a", line=1) is None
    assert parser.parse("Jan  1 00:00:00 h sshd[5]: Connection closed by 192.0.2.1 [preauth]", source="a",
                        line=1) is None
    assert parser.parse("Jun 19 04:09:11 combo syslogd 1.4.1: restart.", source="a", line=1) is None


def test_invalid_lines_rejected_with_reason() -> None:
    parser = SshdParser(reference=datetime(2025, 3, 1, tzinfo=UTC))

    with pytest.raises(LineRejected) as not_syslog:
        parser.parse("garbage", source="a", line=1)
    with pytest.raises(LineRejected) as bad_date:
        parser.parse("Feb 29 00:00:00 h sshd[1]: Invalid user x from 192.0.2.1 port 1", source="a", line=1)

    assert not_syslog.value.reason == "not_syslog"
    assert bad_date.value.reason == "invalid_timestamp"
    assert "Feb 29 00:00:00 in 2025" in bad_date.value.detail


def test_naive_reference_rejected() -> None:
    with pytest.raises(ValueError, match="reference must be timezone-aware"):
        SshdParser(reference=datetime(2025, 1, 1))


@pytest.mark.shared_data
def test_loghub_openssh_counts_match_its_templates(shared_data_dir: Path) -> None:
    """Loghub's structured CSV gives the template of every line; the counts follow from it.

    failed_password: E9 (383) + E10 (135) + E14 (2 "message repeated" lines of 5 each);
    invalid_user: E13 (113); failed_none: E8 (4); accepted_password, session_opened and
    session_closed: one line each. The other 1,360 lines hold no authentication event.
    """
    stats = EventStats()

    events = list(iter_file_events(shared_data_dir / "loghub" / "OpenSSH_2k.log", "sshd", stats=stats))

    assert dict(stats.events) == {"failed_password": 520, "invalid_user": 113, "failed_none": 4,
                                  "accepted_password": 1, "session_opened": 1, "session_closed": 1}
    assert stats.skipped == 1360
    assert stats.errors_total == 0
    assert sum(e.fields.get("repeat", 1) for e in events if e.kind == "failed_password") == 383 + 135 + 10
    assert sum(1 for e in events if e.fields["invalid_user"] and e.kind == "failed_password") == 135


@pytest.mark.shared_data
def test_loghub_linux_sessions_from_old_pam_tag(shared_data_dir: Path) -> None:
    """``sshd(pam_unix)[pid]`` is the tag of older distributions; its session lines count."""
    stats = EventStats()

    list(iter_file_events(shared_data_dir / "loghub" / "Linux_2k.log", "sshd", stats=stats))

    assert dict(stats.events) == {"session_opened": 36, "session_closed": 36}
    assert stats.lines == 2000
    assert stats.errors_total == 0
