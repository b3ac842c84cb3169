"""A line with a NUL byte gets the same verdict from the live agent as from a replay of the same file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent, RunReport
from privacy.random import seeded_random
from tests.agent.test_conn_blocks_agent import parse_counts, windows_by_key
from tests.agent.test_live import write_config
from tests.support.conn_logs import NETWORKS, read_lines

TSV_CONN_LOG = "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled"
JSON_CONN_LOG = "stratosphere-testing/002-zeek-scenario-port-scanning/conn.log"


def damaged_log(shared: Path, *, as_json: bool) -> bytes:
    """A real conn log's first 3,000 lines with a NUL inside three data lines."""
    lines = read_lines(shared / (JSON_CONN_LOG if as_json else TSV_CONN_LOG), 3000)
    data = [text.encode() for text in lines if text]
    for index in (100, 1500, len(data) - 2):
        data[index] = data[index][:20] + b"\x00" + data[index][21:]
    return b"\n".join(data) + b"\n"


def configure(folder: Path) -> Path:
    folder.mkdir()
    config_path = write_config(folder)
    config = yaml.safe_load(config_path.read_text())
    config["site"]["internal_networks"] = list(NETWORKS)
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def replay_counts(folder: Path, data: bytes) -> tuple[dict, int, dict]:
    config_path = configure(folder)
    (folder / "logs" / "conn.log").write_bytes(data)
    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    try:
        report = RunReport(site_id="site-live")
        feeder = agent.read_sources(report)
    finally:
        agent.close()
    return parse_counts(report.parse_stats), report.connections, windows_by_key(feeder)["network"]


def live_counts(folder: Path, data: bytes) -> tuple[dict, int, dict, dict]:
    config_path = configure(folder)
    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=10**9))
    log_file = folder / "logs" / "conn.log"
    try:
        # Two writes, so that the second NUL line is read in a later step than the first.
        middle = data.index(b"\n", len(data) // 2) + 1
        for part in (data[:middle], data[middle:]):
            with log_file.open("ab") as stream:
                stream.write(part)
            live.step()
    finally:
        agent.close()
    return (parse_counts(live.parse_stats), live.orientation.connections, windows_by_key(live._feeder)["network"],
            dict(live.malformed.counts))


@pytest.mark.parametrize("as_json", [False, True], ids=["tsv", "json"])
def test_live_nul_lines_match_replay(tmp_path: Path, shared_data_dir: Path, as_json: bool) -> None:
    data = damaged_log(shared_data_dir, as_json=as_json)

    replayed, replay_connections, replay_windows = replay_counts(tmp_path / "replay", data)
    followed, live_connections, live_windows, by_source = live_counts(tmp_path / "live", data)

    assert replayed["malformed"] == {"nul_byte": 3}
    assert followed == replayed
    assert by_source == {("sources[0]", "nul_byte"): 3}
    assert live_connections == replay_connections > 2000
    assert live_windows == replay_windows
