"""The live agent's counts of malformed sshd, Suricata and Sysmon lines."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

import agent.live as agent_live
from agent.config import load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent
from privacy.random import seeded_random
from tests.agent.test_live import live_snapshot, write_config


def test_sshd_malformed_lines_counted_by_source(tmp_path: Path) -> None:
    """Malformed sshd lines reach the per-source counts that the metrics export."""
    config = load_agent_config(write_config(tmp_path, with_auth=True))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    (tmp_path / "logs" / "auth.log").write_bytes(
        b"2024-06-03T00:00:00+00:00 srv1 sshd[2000]: Failed password for root from 185.220.101.1 port 50000 ssh2\n"
        b"\x00\xff not a syslog line\n"
        b"Jan 99 00:00:01 srv1 sshd[2001]: Failed password for root from 185.220.101.1 port 50001 ssh2\n")

    live.step()
    agent.close()

    assert live.malformed.counts == {("sources[1]", "not_syslog"): 1, ("sources[1]", "invalid_timestamp"): 1}


def test_sysmon_damaged_evtx_counted_once(tmp_path: Path) -> None:
    """A damaged .evtx file under a live Sysmon pattern is one error per version, not lines of text."""
    config_path = write_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["sources"].append({"type": "sysmon", "paths": [str(tmp_path / "logs" / "*.evtx")]})
    config_path.write_text(yaml.safe_dump(config))
    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    (tmp_path / "logs" / "security.evtx").write_bytes(b"ElfFile\x00\x01\x02\n<Event>\n\xff\xfe\n")

    reports = [live.step(), live.step()]
    agent.close()

    assert [r.lines for r in reports] == [0, 0]
    assert live.malformed.counts == {("sources[1]", "unreadable_file"): 1}
    assert live.event_stats.errors == {"unreadable_file": 1}


def test_sshd_year_follows_the_clock_of_each_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A year-less line read in a later month, or after New Year, gets the year of the read."""
    config = load_agent_config(write_config(tmp_path, with_auth=True))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    auth_log = tmp_path / "logs" / "auth.log"
    newest = []

    # Each read happens at the wall-clock time given, shortly after the line was written.
    for now, stamp in [(datetime(2026, 6, 15, 10, 0, 5, tzinfo=timezone.utc), "Jun 15 10:00:00"),
                       (datetime(2026, 7, 1, 12, 0, 5, tzinfo=timezone.utc), "Jul  1 12:00:00"),
                       (datetime(2027, 1, 1, 0, 0, 5, tzinfo=timezone.utc), "Jan  1 00:00:00")]:
        monkeypatch.setattr(agent_live, "datetime", _FixedNow(now))
        with auth_log.open("a") as stream:
            stream.write(f"{stamp} srv1 sshd[2000]: Failed password for root from 185.220.101.1 port 50000 ssh2\n")
        live.step()
        live.commit()
        newest.append(json.loads(live_snapshot(config.state_dir))["watermark"])
    agent.close()

    assert newest == [datetime(2026, 6, 15, 10, tzinfo=timezone.utc).timestamp(),
                      datetime(2026, 7, 1, 12, tzinfo=timezone.utc).timestamp(),
                      datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp()]


class _FixedNow:
    """Stand-in for the live module's ``datetime`` whose ``now`` returns one instant."""

    fromtimestamp = staticmethod(datetime.fromtimestamp)

    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def now(self, tz: object = None) -> datetime:
        return self.instant
