"""The agent's block path for Zeek JSON conn lines against its line path, in replay and live runs.

As for TSV (test_conn_blocks_agent), each test runs the agent twice on the same real logs: as
shipped, and with both block paths switched off. Windows, counts, malformed-line reports and
round statuses must match.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
from agent.families import feeding
from agent.families.feeding import FamilyFeeder
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent, RunReport
from privacy.random import seeded_random
from tests.agent.test_conn_blocks_agent import parse_counts, windows_by_key
from tests.agent.test_live import write_config
from tests.support.conn_logs import NETWORKS, read_lines

MIXED_DIR = "slips/test9-mixed-zeek-dir"
CONN_LOG = "stratosphere-testing/002-zeek-scenario-port-scanning/conn.log"


def line_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the feeder refuse blocks of either format, so that the agent reads one connection per line."""
    for name in ("add_tsv_conn_lines", "tsv_reader", "add_json_conn_lines", "json_reader"):
        monkeypatch.setattr(FamilyFeeder, name, lambda self, *args, **kwargs: None)


def damage(lines: list[str]) -> list[str]:
    """Change a few rows so that some lines take the line path: invalid JSON, an ISO time, a string port."""
    changed = list(lines)
    for index in range(40, len(changed), 977):
        changed[index] = changed[index].replace(",", ";", 1)
    for index in range(90, len(changed), 977):
        values = json.loads(changed[index])
        values["id.resp_p"] = str(values["id.resp_p"])
        changed[index] = json.dumps(values)
    for index in range(150, len(changed), 977):
        values = json.loads(changed[index])
        values["ts"] = "2022-09-29T14:40:56.123456Z"
        changed[index] = json.dumps(values)
    return changed


def replay_state(folder: Path, shared: Path) -> tuple:
    """Read a mixed JSON Zeek folder (conn, dns, ssl, http) and a larger JSON conn log with a replay agent."""
    logs = folder / "logs"
    logs.mkdir(parents=True)
    for name in ("conn.log", "dns.log", "ssl.log", "http.log"):
        shutil.copy(shared / MIXED_DIR / name, logs / name)
    shutil.copy(shared / CONN_LOG, logs / "conn.scan.log")
    for conn in (logs / "conn.log", logs / "conn.scan.log"):
        lines = [text for text in conn.read_text().split("\n") if text]
        conn.write_text("\n".join(damage(lines)) + "\n")

    config_path = write_config(folder)
    config = yaml.safe_load(config_path.read_text())
    names = ("conn.log", "dns.log", "conn.scan.log", "ssl.log", "http.log")
    config["sources"] = [{"type": "zeek", "paths": [str(logs / name) for name in names]}]
    config["site"]["internal_networks"] = list(NETWORKS)
    config_path.write_text(yaml.safe_dump(config))

    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    try:
        report = RunReport(site_id="site-live")
        feeder = agent.read_sources(report)
    finally:
        agent.close()
    return (windows_by_key(feeder), dict(feeder.fed), dict(feeder.unused), asdict(feeder.orientation),
            report.connections, parse_counts(report.parse_stats))


def test_replay_json_blocks_match_line_path(tmp_path: Path, shared_data_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of 1,000 lines split the larger log several times.
    monkeypatch.setattr(feeding, "TSV_BLOCK_LINES", 1000)
    blocks = replay_state(tmp_path / "blocks", shared_data_dir)
    line_path_only(monkeypatch)
    lines = replay_state(tmp_path / "lines", shared_data_dir)

    windows, fed, unused, orientation, connections, parse_stats = blocks
    assert windows == lines[0]
    assert fed == lines[1]
    assert unused == lines[2]
    assert orientation == lines[3]
    assert connections == lines[4]
    assert parse_stats == lines[5]
    assert connections > 4000
    assert parse_stats["malformed"]["invalid_json"] >= 5
    assert fed["network"] > connections


def live_state(folder: Path, shared: Path) -> tuple:
    """Follow a real JSON conn log written in four parts, the last repeating old rows, and return what each step built."""
    rows = damage([text for text in read_lines(shared / CONN_LOG, 6000) if text])
    parts = [rows[:1500], rows[1500:3200], rows[3200:], rows[:300]]

    folder.mkdir()
    config_path = write_config(folder)
    config = yaml.safe_load(config_path.read_text())
    config["site"]["internal_networks"] = list(NETWORKS)
    # The scan lasts minutes, so a baseline of a few windows lets the first round close.
    config["detector"]["min_baseline_windows"] = 8
    config_path.write_text(yaml.safe_dump(config))
    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    log_file = folder / "logs" / "conn.log"
    steps = []
    try:
        for part in parts:
            with log_file.open("a") as stream:
                stream.write("\n".join(part) + "\n")
            report = live.step()
            steps.append((asdict(report), windows_by_key(live._feeder), live._watermark,
                          asdict(live.orientation), parse_counts(live.parse_stats),
                          dict(live.malformed.counts), dict(live._feeder.fed)))
    finally:
        agent.close()
    return tuple(steps)


def test_live_json_blocks_match_line_path(tmp_path: Path, shared_data_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = live_state(tmp_path / "blocks", shared_data_dir)
    line_path_only(monkeypatch)
    lines = live_state(tmp_path / "lines", shared_data_dir)

    for block_step, line_step in zip(blocks, lines, strict=True):
        assert block_step == line_step
    assert blocks[-1][0]["late"] > 0
    assert any(step[0]["rounds"] for step in blocks)
    assert blocks[-1][4]["malformed"]["invalid_json"] >= 4
