"""The agent's block path for TSV conn lines against its line path, in replay and live runs.

Each test runs the agent twice on the same real logs: as shipped, with conn lines added to the
windows block by block, and with the block path switched off, so that every line becomes a
connection object first. Windows, counts, malformed-line reports and round statuses must match.
"""

from __future__ import annotations

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
from agent.zeek_records import ParseStats
from tests.agent.test_live import write_config
from tests.support.conn_logs import NETWORKS, read_lines

MIXED_DIR = "slips/test10-mixed-zeek-dir"
CONN_LOG = "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled"


def windows_by_key(feeder: FamilyFeeder) -> dict[str, dict]:
    """Each family's open windows by (entity, start), in the snapshot form, whose lists keep event order."""
    return {family: {(item["e"], item["s"]) if "e" in item else repr(item): item for item in items}
            for family, items in feeder.to_state().items()}


def parse_counts(stats: ParseStats) -> dict:
    """The parse counters, with each reported error's file name, line, reason and detail."""
    return {"records": stats.records, "header_lines": stats.header_lines, "skipped": stats.skipped,
            "invalid_utf8": stats.invalid_utf8, "malformed": dict(stats.malformed),
            "errors": [(Path(e.source).name, e.line, e.reason, e.detail) for e in stats.errors]}


def line_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the feeder refuse blocks, so that the agent reads one connection per line."""
    monkeypatch.setattr(FamilyFeeder, "add_tsv_conn_lines", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(FamilyFeeder, "tsv_reader", lambda self, *args, **kwargs: None)


def replay_state(folder: Path, shared: Path, *, replay_start: str | None = None) -> tuple:
    """Read a mixed Zeek folder (conn, dns, ssl, weird) and a larger conn log with a replay agent, and return what it built."""
    logs = folder / "logs"
    logs.mkdir(parents=True)
    for name in ("conn.log", "dns.log", "ssl.log", "weird.log"):
        shutil.copy(shared / MIXED_DIR / name, logs / name)
    shutil.copy(shared / CONN_LOG, logs / "conn.labeled.log")
    # Change a few conn rows, so that some blocks fall back to the line path: an extra
    # column is malformed, and a time in exponent notation is valid but not in the plain form.
    for conn in (logs / "conn.log", logs / "conn.labeled.log"):
        lines = conn.read_text().split("\n")
        for index in range(40, len(lines) - 1, 977):
            lines[index] = lines[index].replace("\t", "\t\t", 1)
        for index in range(90, len(lines) - 1, 977):
            ts, rest = lines[index].split("\t", 1)
            lines[index] = f"{float(ts):.9e}\t{rest}"
        conn.write_text("\n".join(lines))

    config_path = write_config(folder)
    config = yaml.safe_load(config_path.read_text())
    names = ("conn.log", "dns.log", "conn.labeled.log", "ssl.log", "weird.log")
    source = {"type": "zeek", "paths": [str(logs / name) for name in names]}
    if replay_start is not None:
        source["replay_start"] = replay_start
    config["sources"] = [source]
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


def test_replay_blocks_match_line_path(tmp_path: Path, shared_data_dir: Path,
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
    assert connections > 1000
    assert parse_stats["malformed"]
    assert fed["network"] > connections


def test_replay_shift_matches_line_path(tmp_path: Path, shared_data_dir: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A source with replay_start keeps the line path, so both runs shift every time alike."""
    blocks = replay_state(tmp_path / "blocks", shared_data_dir, replay_start="2024-06-03T00:00:00Z")
    line_path_only(monkeypatch)
    lines = replay_state(tmp_path / "lines", shared_data_dir, replay_start="2024-06-03T00:00:00Z")

    assert blocks == lines
    assert min(start for _, start in blocks[0]["network"]) >= 1_717_372_800


def live_state(folder: Path, shared: Path) -> tuple:
    """Follow a real TSV conn log written in four parts, the last repeating old rows, and return what each step built."""
    lines = read_lines(shared / CONN_LOG, 6000)
    lines = [text for text in lines if text]
    header = [text for text in lines if text.startswith("#") and not text.startswith("#close")]
    rows = [text for text in lines if not text.startswith("#")]
    rows[1234] = rows[1234].replace("\t", "\t\t", 1)
    parts = [header + rows[:1500], rows[1500:3200], rows[3200:], rows[:300]]

    folder.mkdir()
    config_path = write_config(folder)
    config = yaml.safe_load(config_path.read_text())
    config["site"]["internal_networks"] = list(NETWORKS)
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


def test_live_blocks_match_line_path(tmp_path: Path, shared_data_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = live_state(tmp_path / "blocks", shared_data_dir)
    line_path_only(monkeypatch)
    lines = live_state(tmp_path / "lines", shared_data_dir)

    for block_step, line_step in zip(blocks, lines, strict=True):
        assert block_step == line_step
    last_report = blocks[-1][0]
    assert last_report["late"] == 300
    assert any(step[0]["rounds"] for step in blocks)
    assert blocks[-1][4]["malformed"]
