"""The live agent's counts of malformed sshd, Suricata and Sysmon lines."""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.config import load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent
from privacy.random import seeded_random
from tests.agent.test_live import write_config


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
